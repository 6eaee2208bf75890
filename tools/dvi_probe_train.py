# Offline comparison of DVI draft heads on the records tools/dvi_probe writes
# (docs/online-learning.md, "Choosing the head"). It replays the online learner: records
# arrive in prompt order, and after every `stride` of them one AdamW step (batch 64, gradient
# clipped at 1) is taken on a batch drawn from the last `buffer` records, with the learner's
# distillation (T = 1, the verifier's top-64) and reward-masked cross-entropy (weight 0.5; a
# record counts as accepted when the head's argmax is the target's). Heads are judged on a
# validation split of the learning part only (every 4th learning prompt of each category,
# offset 2): held-back prompts are never read. Printed per head and exit layer: the top-1
# agreement with the target (the acceptance rate of draft position 1) on validation and on
# the training records, and τ of greedy drafting at draft length 4 with the early-exit
# drafter's stop at draft probability 0.3, simulated exactly along the target's greedy path
# (an accepted draft is the target's token, so the next draft's input is the path's h_E).
#
# `schedule` replays the learner more faithfully, to compare KL-only with KL → RL: each record
# is drafted on arrival by the head as it is then (its token a = the head's argmax, reward
# r = [a is the target's], log p_logged(a)), and the loss is the learner's, with the EMA
# baseline (decay 0.99), the clipped importance ratio (2) and the KL → RL schedule of
# draft/dvi_learner.cpp (warm-up 50, ramp 200); variants change the policy-gradient weight,
# the distillation floor, or restrict the policy gradient to the most recent records.
#
#   python3 tools/dvi_probe_train.py DIR [heads|schedule] [LAYER,...]
#       DIR written by dvi_probe; needs torch and numpy; PROBE_DEV=cpu runs without a GPU
import json, sys, time, math
import numpy as np
import torch

d = sys.argv[1]
sweep = sys.argv[2] if len(sys.argv) > 2 else "heads"
sweep_layers = [int(x) for x in sys.argv[3].split(",")] if len(sys.argv) > 3 else None
meta = json.load(open(f"{d}/meta.json"))
N, H, V, K = meta["records"], meta["hidden"], meta["vocab"], meta["top_k"]
eps = meta["eps"]
import os
dev = os.environ.get("PROBE_DEV", "cuda")
torch.backends.cuda.matmul.allow_tf32 = False
def load(name, dtype, shape):
    return torch.from_numpy(np.fromfile(f"{d}/{name}", dtype=dtype).reshape(shape)).to(dev)
W = load("lm_head.f32", np.float32, (V, H))
g0 = load("final_norm.f32", np.float32, (H,))
top_v = load("top_values.f32", np.float32, (N, K))
top_i = load("top_ids.i32", np.int32, (N, K)).long()
amax = load("argmax.i32", np.int32, (N,)).long()
prompt = np.fromfile(f"{d}/prompt.i32", dtype=np.int32)
held = np.fromfile(f"{d}/held.i32", dtype=np.int32)
cats = meta["categories"]
# validation: every 4th learning prompt of each category (offset 2), the rest trains
seen = {}
val_prompt = set()
learn_prompts = []
for p in sorted(set(prompt[held == 0].tolist())):
    c = cats[p]; seen[c] = seen.get(c, 0) + 1
    if seen[c] % 4 == 2: val_prompt.add(p)
is_val = np.array([p in val_prompt for p in prompt])
train_idx = torch.from_numpy(np.nonzero((held == 0) & ~is_val)[0]).to(dev)
val_idx = torch.from_numpy(np.nonzero((held == 0) & is_val)[0]).to(dev)
held_idx = torch.from_numpy(np.nonzero(held == 1)[0]).to(dev)
print(f"records {N}: train {len(train_idx)} validation {len(val_idx)} (held back, unused: {len(held_idx)})", flush=True)
hs = {L: load(f"h{L}.f32", np.float32, (N, H)) for L in meta["layers"]}

def rms(x, g):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g

class Head(torch.nn.Module):
    def __init__(self, rank=0, alpha=32.0, gain=True, lens=False, full=False, bias=False, lowlens=0, mlp=0):
        super().__init__()
        self.lowlens = lowlens
        if lowlens:
            self.U = torch.nn.Parameter(torch.zeros(H, lowlens, device=dev))
            self.Vl = torch.nn.Parameter(torch.randn(lowlens, H, device=dev) / math.sqrt(H))
        self.mlp = mlp
        if mlp:
            self.W1 = torch.nn.Parameter(torch.randn(mlp, H, device=dev) / math.sqrt(H))
            self.W2 = torch.nn.Parameter(torch.zeros(H, mlp, device=dev))
        self.gain = torch.nn.Parameter(g0.clone(), requires_grad=gain)
        self.rank = rank
        if rank:
            self.A = torch.nn.Parameter(torch.randn(rank, H, device=dev) / math.sqrt(H))
            self.B = torch.nn.Parameter(torch.zeros(V, rank, device=dev))
            self.scale = alpha / rank
        self.lens = torch.nn.Parameter(torch.zeros(H, H, device=dev)) if lens else None
        self.bias = torch.nn.Parameter(torch.zeros(H, device=dev)) if bias else None
        self.W = torch.nn.Parameter(W.clone()) if full else None
    def forward(self, h):
        if self.lens is not None: h = h + h @ self.lens.T
        if self.lowlens: h = h + (h @ self.Vl.T) @ self.U.T
        if self.mlp: h = h + torch.nn.functional.silu(h @ self.W1.T) @ self.W2.T
        if self.bias is not None: h = h + self.bias
        n = rms(h, self.gain)
        z = n @ (self.W if self.W is not None else W).T
        if self.rank: z = z + self.scale * (n @ self.A.T) @ self.B.T
        return z

def loss_fn(z, idx, ce_w):
    q = torch.softmax(top_v[idx], -1)
    logp = torch.log_softmax(z, -1)
    kd = (q * (torch.log(q + 1e-30) - logp.gather(1, top_i[idx]))).sum(-1).mean()
    loss = kd
    if ce_w:
        agree = (z.argmax(-1) == amax[idx]).float()
        loss = loss + ce_w * (agree * -logp.gather(1, amax[idx][:, None])[:, 0]).mean()
    return loss

turn = np.fromfile(f"{d}/turn.i32", dtype=np.int32)
@torch.no_grad()
def tau(head, L, idx, k=4, stop=0.3):
    idx_np = idx.cpu().numpy()
    match, prob = [], []
    for s in range(0, len(idx), 4096):
        j = idx[s:s + 4096]
        p = torch.softmax(head(hs[L][j]), -1)
        m, a = p.max(-1)
        match.append((a == amax[j]).cpu().numpy()); prob.append(m.cpu().numpy())
    match = np.concatenate(match); prob = np.concatenate(prob)
    tokens = steps = 0
    start = 0
    while start < len(idx_np):
        end = start
        key = (prompt[idx_np[start]], turn[idx_np[start]])
        while end < len(idx_np) and (prompt[idx_np[end]], turn[idx_np[end]]) == key: end += 1
        t = start
        while t < end:
            m = 0
            while m < k and t + m < end and match[t + m]:
                m += 1
                if prob[t + m - 1] < stop: break
            adv = min(m + 1, end - t)
            tokens += adv; steps += 1; t += adv
        start = end
    return tokens / steps

@torch.no_grad()
def agreement(head, L, idx):
    hits = 0
    for s in range(0, len(idx), 4096):
        j = idx[s:s + 4096]
        hits += (head(hs[L][j]).argmax(-1) == amax[j]).sum().item()
    return hits / len(idx)

def run(L, name, lr=1e-3, stride=16, batch=64, buffer=4096, wd=0.0, ce=0.5, passes=1, **kw):
    torch.manual_seed(0)
    head = Head(**kw)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd) if params else None
    t0 = time.time(); updates = 0
    if opt:
        gen = torch.Generator(device=dev); gen.manual_seed(1)
        for _ in range(passes):
            for end in range(batch, len(train_idx) + 1, stride):
                lo = max(0, end - buffer)
                pick = train_idx[lo + torch.randint(0, end - lo, (batch,), device=dev, generator=gen)]
                loss = loss_fn(head(hs[L][pick]), pick, ce)
                opt.zero_grad(); loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step(); updates += 1
    torch.cuda.synchronize() if dev == "cuda" else None
    a = agreement(head, L, val_idx)
    at = agreement(head, L, train_idx)
    tv = tau(head, L, val_idx)
    print(f"L{L:>2} {name:<30} lr {lr:<6g} upd {updates:<5} val a1 {a:.4f} train a1 {at:.4f} val tau(k4) {tv:.3f}", flush=True)
    return a

def run_schedule(L, name, kl_only=False, pg_weight=1.0, floor=0.2, warmup=50, ramp=200, lr=1e-3, stride=16, batch=64,
                 buffer=4096, ce=0.5, clip=2.0, decay=0.99, recent=0, **kw):
    torch.manual_seed(0)
    head = Head(**kw)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    gen = torch.Generator(device=dev); gen.manual_seed(1)
    n = len(train_idx)
    token = torch.zeros(n, dtype=torch.long, device=dev)   # drafted on arrival
    reward = torch.zeros(n, device=dev)
    logged = torch.zeros(n, device=dev)
    baseline = None
    arrived = 0
    updates = 0
    for end in range(batch, n + 1, stride):
        with torch.no_grad():  # the records that arrived since the last update, drafted by the head as it is
            j = train_idx[arrived:end]
            logp = torch.log_softmax(head(hs[L][j]), -1)
            a = logp.argmax(-1)
            token[arrived:end] = a
            logged[arrived:end] = logp.gather(1, a[:, None])[:, 0]
            reward[arrived:end] = (a == amax[j]).float()
            for r in reward[arrived:end].tolist():
                baseline = r if baseline is None else decay * baseline + (1 - decay) * r
            arrived = end
        if kl_only or updates < warmup:
            w_kd, w_pg = 1.0, 0.0
        else:
            progress = min(1.0, (updates - warmup) / ramp) if ramp else 1.0
            w_kd, w_pg = 1.0 - (1.0 - floor) * progress, pg_weight * progress
        lo = max(0, end - buffer)
        pick = lo + torch.randint(0, end - lo, (batch,), device=dev, generator=gen)
        idx = train_idx[pick]
        z = head(hs[L][idx])
        logp = torch.log_softmax(z, -1)
        q = torch.softmax(top_v[idx], -1)
        kd = (q * (torch.log(q + 1e-30) - logp.gather(1, top_i[idx]))).sum(-1)
        lp_a = logp.gather(1, token[pick][:, None])[:, 0]
        r = reward[pick]
        w = torch.clamp(torch.exp(lp_a.detach() - logged[pick]), max=clip)
        if recent:  # the policy gradient on the last `recent` records only (near on-policy)
            w = w * (pick >= end - recent).float()
        loss = (w_kd * kd + ce * r * -lp_a + w_pg * (r - baseline) * w * -lp_a).mean()
        opt.zero_grad(); loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(); updates += 1
    a1 = agreement(head, L, val_idx)
    tv = tau(head, L, val_idx)
    print(f"L{L:>2} {name:<30} upd {updates:<5} val a1 {a1:.4f} val tau(k4) {tv:.3f} (untrained {tau(Head(**kw), L, val_idx):.3f})",
          flush=True)

if sweep == "schedule":
    for L in sweep_layers or [8, 20]:
        run_schedule(L, "KL only", kl_only=True, rank=16, lens=True)
        run_schedule(L, "KL -> RL (defaults)", rank=16, lens=True)
        run_schedule(L, "KL -> RL, kd floor 1", floor=1.0, rank=16, lens=True)
        run_schedule(L, "KL -> RL, pg 0.25", pg_weight=0.25, rank=16, lens=True)
        run_schedule(L, "KL -> RL, pg 0.25, floor 1", pg_weight=0.25, floor=1.0, rank=16, lens=True)
        run_schedule(L, "KL -> RL, pg on the last 256", recent=256, rank=16, lens=True)
    sys.exit(0)

for L in [4, 6, 8, 10, 12, 16, 20]:
    run(L, "base")
    run(L, "lora16 a32", rank=16)
    run(L, "lens", lens=True)
for L in [8, 12, 16]:
    run(L, "gain only", rank=0)
    run(L, "lora16 a32 no gain", rank=16, gain=False)
    run(L, "lora64 a64", rank=64, alpha=64)
    run(L, "lora256 a256", rank=256, alpha=256)
    run(L, "lens lr3e-4", lens=True, lr=3e-4)
    run(L, "lens+bias", lens=True, bias=True)
    run(L, "lens+lora16", rank=16, lens=True)
    run(L, "full head lr1e-4", full=True, lr=1e-4)
    run(L, "full head lr3e-4", full=True, lr=3e-4)
for L in [8, 12]:
    run(L, "lens wd0.01", lens=True, wd=0.01)
    run(L, "lens wd0.1", lens=True, wd=0.1)
    run(L, "lens lr3e-3", lens=True, lr=3e-3)
    run(L, "lens batch128", lens=True, batch=128)
    run(L, "lens buffer16k", lens=True, buffer=16384)
    run(L, "lens no gain", lens=True, gain=False)
    run(L, "lens ce0", lens=True, ce=0)
    run(L, "lens ce2", lens=True, ce=2)
    run(L, "low-rank lens r64", lowlens=64)
    run(L, "low-rank lens r128", lowlens=128)
    run(L, "lens+lora64", lens=True, rank=64, alpha=64)
    run(L, "mlp1024", mlp=1024)
for L in [8, 16]:
    run(L, "lora16 stride4", rank=16, stride=4)
    run(L, "lens stride4", lens=True, stride=4)
    run(L, "lens 4 passes", lens=True, passes=4)
