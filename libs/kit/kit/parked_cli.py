"""The operator's command for parked events (kit.parked), on every service at once:

    python -m kit.parked_cli list [--service billing] [--consumer GROUP]
    python -m kit.parked_cli replay [--service billing] [--consumer GROUP] [--event-id ID]

Services are found by their `<NAME>_SVC_URL` environment variables (the stack's env file has them:
`deploy/local/stack.py parked --stack run` runs this with it). Staff authenticate with PB_ADMIN_TOKEN, or
ADMIN_LOGIN/ADMIN_PASSWORD (else ADMIN_BOOTSTRAP_LOGIN/ADMIN_BOOTSTRAP_PASSWORD) against user-svc.
`replay` exits 1 when an event failed again."""

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

# The local stacks' development administrator (user-svc creates it outside production).
_DEV_LOGIN = "admin"
_DEV_PASSWORD = "dev-admin-password"


def service_urls(env: Mapping[str, str]) -> dict[str, str]:
    return {k.removesuffix("_SVC_URL").lower(): v.rstrip("/") for k, v in sorted(env.items()) if k.endswith("_SVC_URL")}


def admin_token(http: httpx.Client, env: Mapping[str, str], urls: Mapping[str, str]) -> str:
    if given := env.get("PB_ADMIN_TOKEN"):
        return given
    login = env.get("ADMIN_LOGIN") or env.get("ADMIN_BOOTSTRAP_LOGIN") or _DEV_LOGIN
    password = env.get("ADMIN_PASSWORD") or env.get("ADMIN_BOOTSTRAP_PASSWORD") or _DEV_PASSWORD
    if "user" not in urls:
        raise SystemExit("USER_SVC_URL is not set: set it or PB_ADMIN_TOKEN")
    answer = http.post(f"{urls['user']}/v1/admin/sessions", json={"login": login, "password": password})
    if answer.status_code != 200:
        raise SystemExit(f"administrator login failed: {answer.status_code} {answer.text[:200]}")
    token: str = answer.json()["access_token"]
    return token


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": args.limit}
    if args.consumer:
        params["consumer"] = args.consumer
    return params


def run(argv: Sequence[str], env: Mapping[str, str], out: Any = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit.parked_cli", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["list", "replay"])
    parser.add_argument("--service", help="only this service (user, device, billing, asset, notify, analytics)")
    parser.add_argument("--consumer", help="only this consumer group")
    parser.add_argument("--event-id", help="replay only this event (needs --service and --consumer)")
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args(argv)
    urls = service_urls(env)
    if args.service:
        if args.service not in urls:
            raise SystemExit(f"no {args.service.upper()}_SVC_URL; known: {', '.join(urls) or 'none'}")
        urls = {args.service: urls[args.service]}
    if args.event_id and not (args.service and args.consumer):
        raise SystemExit("--event-id needs --service and --consumer")
    failed = 0
    with httpx.Client(timeout=30) as http:
        headers = {"Authorization": f"Bearer {admin_token(http, env, service_urls(env))}"}
        for name, url in urls.items():
            if args.action == "list":
                answer = http.get(f"{url}/v1/admin/parked-events", params=_params(args), headers=headers)
                answer.raise_for_status()
                items = answer.json()["items"]
                print(f"{name}: {len(items)} parked", file=out)
                for item in items:
                    error = (item["error"] or "").replace("\n", " ")[:120]
                    print(
                        f"  {item['parked_at']}  {item['consumer']}  {item['event_id']}  {item['event_type']}  {error}",
                        file=out,
                    )
                continue
            if args.event_id:
                answer = http.post(
                    f"{url}/v1/admin/parked-events/{args.consumer}/{args.event_id}/replay", headers=headers
                )
                answer.raise_for_status()
                results = [answer.json()]
            else:
                answer = http.post(f"{url}/v1/admin/parked-events/replay", params=_params(args), headers=headers)
                answer.raise_for_status()
                results = answer.json()
            print(f"{name}: {len(results)} replayed", file=out)
            for result in results:
                failed += result["outcome"] == "failed"
                line = f"  {result['consumer']}  {result['event_id']}  {result['outcome']}  {result['error'] or ''}"
                print(line.rstrip(), file=out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:], os.environ))
