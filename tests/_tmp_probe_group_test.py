import logging
import traceback
from collections import Counter

from fastapi.testclient import TestClient

from tests.api_helpers import build_rig
from tests.test_malformed_bodies import Sweep, body_routes, sweep_route


class Grab(logging.Handler):
    def __init__(self):
        super().__init__(); self.last = None
    def emit(self, record):
        if record.exc_info:
            tb = traceback.extract_tb(record.exc_info[2])
            frames = [f"{f.filename.split('/work/main/')[-1]}:{f.lineno}" for f in tb if "/work/main/rag_ray" in f.filename][-2:]
            self.last = f"{record.exc_info[0].__name__}: {str(record.exc_info[1])[:100]} @ {frames}"

def test_group(make_settings, fake_store):
    rig = build_rig(make_settings(), fake_store)
    spec = rig.client.get("/openapi.json").json()
    grab = Grab(); logging.getLogger("rag_ray.api.errors").addHandler(grab)
    sweep = Sweep(TestClient(rig.client.app, raise_server_exceptions=False), rig.auth("admin"))
    groups = Counter(); examples = {}
    orig = sweep.send
    def send(route, body_class, content, what):
        n = len(sweep.failures); grab.last = None
        orig(route, body_class, content, what)
        if len(sweep.failures) > n:
            key = (route.path, grab.last or sweep.failures[-1].split("→")[1][:150])
            groups[key] += 1; examples.setdefault(key, what)
    sweep.send = send
    for route in body_routes(spec):
        sweep_route(sweep, route, spec)
    for (path, err), n in sorted(groups.items()):
        print(f"{n:4d} {path} | {err} | e.g. {examples[(path, err)][:100]}")
