import torch, statistics, time
torch.set_num_threads(1)
from gateloop.chunked import always_split
from studies.experiments.capability.plan import main_plan, step_ms
from studies.experiments.capability.study import STUDIES
from studies.train import build_model, make_optimizer, train_step
item = next(i for i in main_plan(STUDIES["v2"], "cpu") if f"{i.variant}/{i.label}" == "z3/gateloop_kv")
c = item.config; tc = c.train
trained = build_model(c); trained.load_state_dict(torch.load("/tmp/trained_z3_gateloop_kv.pt"))
opt, sched = make_optimizer(trained, tc)
batch = c.task.sample(tc.batch_size, torch.Generator().manual_seed(0))
ts = []
for i in range(11):
    s = time.perf_counter(); train_step(trained, opt, sched, batch, tc, torch.device("cpu")); ts.append(1000*(time.perf_counter()-s))
print(f"trained model (auto form): {statistics.median(ts[1:]):.1f} ms/step; fresh model, split form (dry run's step_ms): {step_ms(c, 10):.1f} ms/step")
