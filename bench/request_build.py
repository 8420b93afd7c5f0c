"""What building a cycle's httpx requests costs, per request, with no network.

    python bench/request_build.py           # 1,000 requests, 21 repetitions
    python bench/request_build.py --quick   # smoke: 100 requests, 3 repetitions

``monitor check`` meets every check for the first time, so its cycle builds every
request (a long-lived ``monitor run`` builds each once). Two ways, on two sets of URLs,
each on a fresh builder per repetition, 1,000 requests per repetition:

* ``client_one_origin``: ``httpx.AsyncClient.build_request`` for each, as the prober
  did before the fifth round of issue 16, the checks of 10 targets on one host;
* ``template_one_origin``: ``monitor.probing.prober.OutgoingRequests`` on the same: the
  first request of each shape is built by the client, the others from its template;
* ``client_all_origins`` and ``template_all_origins``: the same two with every request
  on its own host and port, so that every request is the first of its shape: the case
  templates cannot help, and what looking for one costs.

The cost inside a cycle, where building is interleaved with the answers of other
probes, is higher; that one is measured by ``bench/blackbox.py`` as a whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import _common as c

PER_TARGET = 100


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=None, help="requests per repetition (1000)")
    p.add_argument("--reps", type=int, default=None, help="repetitions (21)")
    args = p.parse_args()
    count = args.requests or (100 if args.quick else 1000)
    reps = args.reps or (3 if args.quick else 21)
    c.emit(run(count, reps), args.out)


def run(count: int, reps: int) -> dict[str, object]:
    import httpx

    from monitor.probing.kinds import Request
    from monitor.probing.prober import REGION_HEADER, OutgoingRequests, user_agent

    # the prober's client headers, merged into every request
    client = httpx.AsyncClient(headers={"User-Agent": user_agent("ams"), REGION_HEADER: "ams"})
    paths = [f"/t{i // PER_TARGET:05d}/c{i:05d}/health" for i in range(count)]
    one_origin = [Request("GET", f"http://app.internal:8080{p}") for p in paths]
    all_origins = [
        Request("GET", f"http://a{i}.app.internal:{8000 + i % 1000}{p}")
        for i, p in enumerate(paths)
    ]

    def through_client(requests: list[Request]) -> Callable[[], None]:
        def build() -> None:  # with the cache the prober kept before, keyed as it was
            built: dict[tuple[object, ...], httpx.Request] = {}
            for r in requests:
                key = (None, r.method, r.url, tuple(r.params), tuple(r.headers.items()), 10.0)
                if key not in built:
                    built[key] = client.build_request(
                        r.method,
                        r.url,
                        params=list(r.params) or None,
                        headers=dict(r.headers),
                        timeout=httpx.Timeout(10.0),
                    )

        return build

    def templates(requests: list[Request]) -> Callable[[], None]:
        def build() -> None:
            outgoing = OutgoingRequests(client)
            for r in requests:
                outgoing.get(r, 10.0)

        return build

    variants = {
        "client_one_origin": through_client(one_origin),
        "template_one_origin": templates(one_origin),
        "client_all_origins": through_client(all_origins),
        "template_all_origins": templates(all_origins),
    }
    us: dict[str, list[float]] = {name: [] for name in variants}
    for build in variants.values():
        build()  # warm-up
    for rep in range(reps):
        for name, build in variants.items():
            start = time.perf_counter()
            build()
            us[name].append((time.perf_counter() - start) / count * 1e6)
        if rep == 0 or rep == reps - 1:
            c.say(
                f"rep {rep + 1}/{reps}: " + "  ".join(f"{n} {v[-1]:.1f}us" for n, v in us.items())
            )
    return {
        "bench": "request_build",
        "requests": count,
        "reps": reps,
        "us_per_request": {name: c.summary(values, 2) for name, values in us.items()},
        "template_over_client": {
            origins: c.ratios(us[f"template_{origins}"], us[f"client_{origins}"])
            for origins in ("one_origin", "all_origins")
        },
    }


if __name__ == "__main__":
    main()
