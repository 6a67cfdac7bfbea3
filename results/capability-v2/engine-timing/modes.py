import torch, statistics, time, dataclasses
torch.set_num_threads(1)
from studies.experiments.capability.plan import main_plan
from studies.experiments.capability.study import STUDIES
from studies.train import build_model, make_optimizer, train_step
item = next(i for i in main_plan(STUDIES["v2"], "cpu") if f"{i.variant}/{i.label}" == "z3/gateloop_kv")
c = item.config; tc = c.train
sd = torch.load("/tmp/trained_z3_gateloop_kv.pt")
batch = c.task.sample(tc.batch_size, torch.Generator().manual_seed(0))
for rep in range(2):
  for mode in ("chunked", "attention", "scan", "elementwise", "recurrent"):
    cm = dataclasses.replace(c, mixer=dataclasses.replace(c.mixer, mode=mode))
    m = build_model(cm); m.load_state_dict(sd)
    opt, sched = make_optimizer(m, tc)
    ts = []
    for i in range(11):
        s = time.perf_counter(); train_step(m, opt, sched, batch, tc, torch.device("cpu")); ts.append(1000*(time.perf_counter()-s))
    print(mode, f"{statistics.median(ts[1:]):.1f} ms")
