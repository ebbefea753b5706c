"""A stand-in for Binance spot's public REST API on loopback, enough for freqtrade's dry-run to trade against.

This machine has no internet; ccxt's URLs are pointed here (`ccxt_urls`). Only the public market-data calls that
ccxt makes for freqtrade are answered; every request is recorded (`calls`) so a test can say what freqtrade asked.
Prices are a flat line around a price per pair, so a dry-run limit order at the ask fills at once; `set_price`
moves a pair's line (a limit order far from it stays open until the line crosses it).

What freqtrade 2026.9 (ccxt 4.5.90, spot, enable_ws false) asks: at start exchangeInfo and time; every loop
ticker/24hr; klines per pair on each new candle; depth when it checks whether a dry-run order filled.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PAIRS = {"BTCUSDT": ("BTC", "USDT", 50000.0), "ETHUSDT": ("ETH", "USDT", 3000.0), "LTCUSDT": ("LTC", "USDT", 80.0)}
INTERVALS = {"1m": 60, "3m": 180, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}


def _symbol(name: str, base: str, quote: str) -> dict:
    return {
        "symbol": name, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8, "quoteAsset": quote,
        "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "permissions": ["SPOT"], "permissionSets": [["SPOT"]],
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000", "stepSize": "0.00001000"},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *_args) -> None:  # the test reads `calls`, not stderr
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        with self.server.lock:
            self.server.calls.append(url.path)
        route = {
            "/api/v3/ping": lambda: {},
            "/api/v3/time": lambda: {"serverTime": int(time.time() * 1000)},
            "/api/v3/exchangeInfo": lambda: {"timezone": "UTC", "serverTime": int(time.time() * 1000), "rateLimits": [],
                                             "symbols": [_symbol(s, b, qu) for s, (b, qu, _p) in PAIRS.items()]},
            "/api/v3/klines": lambda: self._klines(q),
            "/api/v3/ticker/24hr": lambda: self._tickers(q),
            "/api/v3/ticker/bookTicker": lambda: self._tickers(q),
            "/api/v3/ticker/price": lambda: self._tickers(q),
            "/api/v3/depth": lambda: self._depth(q),
        }.get(url.path)
        if route is None:
            with self.server.lock:
                self.server.unanswered.append(url.path)
            return self._send(404, {"code": -1100, "msg": f"stand-in exchange: no {url.path}"})
        self._send(200, route())

    def _send(self, code: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _price(self, symbol: str) -> float:
        with self.server.lock:
            return self.server.prices[symbol]

    def _klines(self, q: dict) -> list:
        step = INTERVALS[q.get("interval", "5m")] * 1000
        limit = int(q.get("limit", 500))
        now = int(time.time() * 1000) // step * step
        start = int(q["startTime"]) // step * step if "startTime" in q else now - (limit - 1) * step
        p = self._price(q["symbol"])
        rows = []
        for t in range(start, now + 1, step):
            rows.append([t, f"{p:.2f}", f"{p * 1.001:.2f}", f"{p * 0.999:.2f}", f"{p:.2f}", "10.0", t + step - 1,
                         f"{p * 10:.2f}", 100, "5.0", f"{p * 5:.2f}", "0"])
        return rows[:limit]

    def _ticker(self, symbol: str) -> dict:
        p = self._price(symbol)
        now = int(time.time() * 1000)
        return {"symbol": symbol, "priceChange": "0", "priceChangePercent": "0", "weightedAvgPrice": f"{p:.2f}",
                "prevClosePrice": f"{p:.2f}", "lastPrice": f"{p:.2f}", "lastQty": "1", "bidPrice": f"{p - 0.01:.2f}",
                "bidQty": "10", "askPrice": f"{p + 0.01:.2f}", "askQty": "10", "openPrice": f"{p:.2f}",
                "highPrice": f"{p * 1.001:.2f}", "lowPrice": f"{p * 0.999:.2f}", "volume": "1000",
                "quoteVolume": f"{p * 1000:.2f}", "openTime": now - 86400000, "closeTime": now, "firstId": 1,
                "lastId": 1000, "count": 1000, "price": f"{p:.2f}"}

    def _tickers(self, q: dict):
        if "symbol" in q:
            return self._ticker(q["symbol"])
        return [self._ticker(s) for s in PAIRS]

    def _depth(self, q: dict) -> dict:
        p = self._price(q["symbol"])
        return {"lastUpdateId": 1, "bids": [[f"{p - 0.01 * i:.2f}", "10"] for i in range(1, 6)],
                "asks": [[f"{p + 0.01 * i:.2f}", "10"] for i in range(1, 6)]}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr):
        super().__init__(addr, _Handler)
        self.lock = threading.Lock()
        self.calls: list[str] = []
        self.unanswered: list[str] = []
        self.prices = {s: p for s, (_b, _q, p) in PAIRS.items()}


class StandInExchange:
    """Serve on 127.0.0.1:port (0: any free port) in a thread until stop()."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        self._server = _Server((host, port))
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> StandInExchange:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def calls(self) -> list[str]:
        with self._server.lock:
            return list(self._server.calls)

    @property
    def unanswered(self) -> list[str]:
        with self._server.lock:
            return list(self._server.unanswered)

    def set_price(self, symbol: str, price: float) -> None:
        """From now on the pair (e.g. BTCUSDT) trades around `price`: its candles, tickers and order book."""
        with self._server.lock:
            self._server.prices[symbol] = price

    def ccxt_urls(self) -> dict:
        """freqtrade's exchange.ccxt_config / ccxt_async_config: ccxt deep-merges it over binance's own URLs."""
        base = self.url
        return {"urls": {"api": {"public": f"{base}/api/v3", "private": f"{base}/api/v3", "v1": f"{base}/api/v1",
                                 "sapi": f"{base}/sapi/v1", "sapiV2": f"{base}/sapi/v2"}},
                "options": {"fetchMarkets": {"types": ["spot"]}}}


if __name__ == "__main__":  # by hand: python tests/ftexchange.py PORT
    import sys

    ex = StandInExchange(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(ex.url, flush=True)
    ex._server.serve_forever()
