import sys, torch, dataclasses
torch.set_num_threads(1)
from studies.experiments.capability.plan import main_plan
from studies.experiments.capability.study import STUDIES
from studies.train import build_model, make_optimizer, train_step
key, lr, steps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
item = next(i for i in main_plan(STUDIES["v2"], "cpu") if f"{i.variant}/{i.label}" == key)
c = item.config
tc = dataclasses.replace(c.train, lr=lr, steps=max(steps, 2000))
torch.manual_seed(0)
model = build_model(c); opt, sched = make_optimizer(model, tc)
g = torch.Generator().manual_seed(0)
for _ in range(steps):
    train_step(model, opt, sched, c.task.sample(tc.batch_size, g), tc, torch.device("cpu"))
torch.save(model.state_dict(), f"/tmp/trained_{key.replace('/', '_')}.pt")
from torch.profiler import profile, ProfilerActivity
batch = c.task.sample(tc.batch_size, g)
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(5):
        train_step(model, opt, sched, batch, tc, torch.device("cpu"))
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
