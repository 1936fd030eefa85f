"""Driver of benches/compare: times one training step of the crate, the JAX restatement
(jax.jit) and PyTorch eager on the same configuration and machine, interleaved; with
``--nets dit,lightning`` the LightningDiT of the same sizes (SwiGLU, RoPE, RMSNorm, adaLN
shift: the reference's ImageNet switches) runs in the same rounds, SiT and MeanFlow steps.

Each (implementation, interface) is a long-lived worker process (examples/bench_step.rs,
benches/jax_step.py, benches/torch_dit.py, all with --serve). After a warm-up (which
compiles JAX), rounds run ``--steps`` timed steps of every worker in turn (A B C A B C ...,
the order rotated every round); the table reports medians over all timed steps.

On CUDA the workers run one after the other instead (one device, no load to share; the
caching allocators of live workers would starve each other), and a worker that fails (e.g.
out of device memory) is reported and skipped.

Memory, CPU: each worker is a fresh process per configuration. ``warm`` is its VmRSS after
the warm-up and a glibc ``malloc_trim`` (live memory: parameters, data, libraries and code
pages touched, JAX's compiled step); the high-water mark is then reset through
/proc/PID/clear_refs, so ``peak`` (VmHWM over the timed rounds) excludes JAX's compilation;
``step`` = peak - warm, the transient memory of one step (activations, gradients). CUDA: the device memory of the
process from nvidia-smi after the rounds (the caching allocators keep their peak
reservation), and torch.cuda.max_memory_allocated for PyTorch.

Cores, CPU: every worker is pinned to the same ``--threads`` CPUs (sched_setaffinity; ``--no-pin``
leaves the scheduler free), and the driver reads each worker's CPU time (utime + stime of all
its threads, /proc/PID/stat) around its timed steps: ``cores`` = CPU seconds / wall seconds,
printed per worker, so a table whose implementations did not all get the same cores says so.
Unpinned, jaxlib 0.5.1's CPU client runs a step on both cores of this machine whatever
XLA_FLAGS say (``--xla_cpu_multi_thread_eigen=false`` included): measured 1.8-1.9 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("CACHE", os.path.expanduser("~/.cache/diffuse-spec"))
JAX_PY = os.environ.get("DIFFUSE_SPEC_PYTHON", os.path.join(CACHE, "jax-0.5.1/bin/python"))
TORCH_PY = os.environ.get("TORCH_PYTHON", os.path.join(CACHE, "torch-2.11.0/bin/python"))
CRATE = os.path.join(ROOT, "target/release/examples/bench_step")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid):
    """CPU seconds (user + system, every thread) of process `pid`, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)
    except (OSError, IndexError, ValueError):
        return float("nan")


class Worker:
    def __init__(self, impl, label, cmd, env, cpus=None):
        self.impl, self.label, self.cmd = impl, label, cmd
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, bufsize=1, preexec_fn=pin)
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self.times: list[float] = []
        self.info = None
        self.setup_kb = None
        self.warm_kb = None
        self.extra = {}

    def read(self):
        while True:
            line = self.p.stdout.readline()
            if not line:
                err = self.p.stderr.read()
                raise SystemExit(f"worker {self.impl}/{self.label} died: {' '.join(self.cmd)}\n{err[-3000:]}")
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)

    def ready(self):
        msg = self.read()
        self.info = msg.get("info")
        self.setup_kb = proc_kb(self.p.pid, "VmRSS")

    def trim(self):
        self.p.stdin.write("trim\n")
        self.p.stdin.flush()
        self.read()
        self.warm_kb = proc_kb(self.p.pid, "VmRSS")

    def cmd_run(self, n, keep=True):
        c0, t0 = proc_cpu_s(self.p.pid), time.perf_counter()
        self.p.stdin.write(f"run {n}\n")
        self.p.stdin.flush()
        msg = self.read()
        c1, t1 = proc_cpu_s(self.p.pid), time.perf_counter()
        if "error" in msg:
            raise SystemExit(f"{self.impl}/{self.label}: {msg['error']}")
        if keep:
            self.times.extend(msg["times_ms"])
            self.cpu_s += c1 - c0
            self.wall_s += t1 - t0
        for k, v in msg.items():
            if k != "times_ms":
                self.extra[k] = v
        return msg["times_ms"]

    def close(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.flush()
            self.p.wait(timeout=30)
        except Exception:
            self.p.kill()

    def median(self):
        return statistics.median(self.times) if self.times else float("nan")

    def cores(self):
        """Mean CPU use over the timed steps, in cores (1.0: one core busy throughout)."""
        return self.cpu_s / self.wall_s if self.wall_s else float("nan")


H200_BF16_PEAK_TFLOPS = 790.0
ARCH = {"bench-s": dict(D=192, T=64, L=6, P=16, F=256, M=768, B=16),
        "bench-xl": dict(D=1152, T=256, L=28, P=16, F=256, M=4608, B=256)}


def dit_forward_flops(D, T, L, P, F, M, n_emb, swiglu=False):
    """Analytic forward FLOPs of one example (as benches/common/mod.rs): matmuls only,
    T L (8 D^2 + 4 D M + 4 T D) + 12 L D^2 + 4 T P D + 4 D^2 + n_emb 2 (F D + D^2); with
    SwiGLU (LightningDiT) the MLP term is 6 D H, H = int(2/3 M)."""
    mlp = 6 * D * int(2 / 3 * M) if swiglu else 4 * D * M
    return T * L * (8 * D * D + mlp + 4 * T * D) + 12 * L * D * D + 4 * T * P * D + 4 * D * D + n_emb * 2 * (F * D + D * D)


LIGHTNING = ":lightning"


def lab(it, net):
    """Worker label of step `it` on network `net` (the DiT's labels are the bare steps)."""
    return it if net == "dit" else it + LIGHTNING


def proc_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_hwm(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def nvidia_smi_mib():
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    res = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit():
            res[int(parts[0])] = float(parts[1])
    return res


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="bench-s", choices=["bench-s", "bench-xl"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="CUDA bf16 autocast (crate and PyTorch)")
    ap.add_argument("--batch", type=int, help="override the configuration's batch (crate and PyTorch)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per worker per round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads of every implementation (default 1: on a shared 2-core machine "
                         "a second thread mostly waits on other load)")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin the workers to --threads CPUs (the `cores` column then shows what each took)")
    ap.add_argument("--impls", default="crate,jax,torch")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile workers (SiT, MeanFlow, sCT)")
    ap.add_argument("--nets", default="dit", help="networks, comma separated: dit, lightning (SiT and MeanFlow steps)")
    ap.add_argument("--no-defaults", action="store_true",
                    help="skip the crate's SiT step and bare network with its default (reference) attention and LayerNorm")
    ap.add_argument("--json", help="write every timing and memory figure here")
    ap.add_argument("--malloc-mmap-threshold", type=int, metavar="BYTES",
                    help="glibc's MALLOC_MMAP_THRESHOLD_ for every worker (all three implementations): a fixed "
                         "threshold turns off glibc's dynamic one, under which freed buffers stay in the heap and "
                         "peak RSS counts fragmentation as well as live memory")
    ap.add_argument("--crate-baseline", metavar="BINARY",
                    help="another build of examples/bench_step (e.g. before a change): its steps run as "
                         "implementation `base`, interleaved with the others, and are printed beside the crate's")
    a = ap.parse_args()
    impls = a.impls.split(",")
    nets = a.nets.split(",")
    for net in nets:
        if net not in ("dit", "lightning"):
            raise SystemExit(f"--nets: unknown network {net!r} (dit, lightning)")
    cuda = a.device.startswith("cuda")
    if a.batch and "jax" in impls:
        print("note: the JAX worker runs bench-s at its batch of 16 only; skipping it with --batch")
        impls.remove("jax")
    if cuda and "jax" in impls:
        print("note: the JAX restatement is benched on CPU only (bench-s); skipping it on CUDA")
        impls.remove("jax")
    if a.config == "bench-xl" and not cuda:
        raise SystemExit("bench-xl (DiT-XL/2, batch 256) runs on CUDA only")

    env = dict(os.environ)
    n = str(a.threads)
    env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n)
    if a.malloc_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(a.malloc_mmap_threshold)
    # XLA's own knob for its dot / convolution threads; jaxlib's CPU client still runs the other
    # work of a step on a pool as large as the CPUs it may use, hence the pinning below.
    jax_env = dict(env, JAX_PLATFORMS="cpu", XLA_PYTHON_CLIENT_PREALLOCATE="false",
                   XLA_FLAGS=f"--xla_cpu_multi_thread_eigen={'true' if a.threads > 1 else 'false'}")
    cpus = None
    if not cuda and not a.no_pin:
        avail = sorted(os.sched_getaffinity(0))
        if a.threads > len(avail):
            raise SystemExit(f"--threads {a.threads}: only {len(avail)} CPUs available ({avail}); --no-pin to oversubscribe")
        cpus = set(avail[-a.threads:])

    extra = (["--bf16"] if a.bf16 else []) + (["--batch", str(a.batch)] if a.batch else [])
    crate_common = ["--config", a.config, "--device", a.device, "--serve"] + extra
    torch_common = ["--config", a.config, "--device", a.device, "--threads", n, "--serve"] + extra
    # rows: (row label, {impl: worker label}); workers: (impl, label) -> cmd
    specs = {}
    crate_steps = ["sit", "edm", "meanflow-fused", "meanflow-db", "meanflow-fad", "sct-fused", "sct-db", "net"]
    light_steps = ["sit", "meanflow-fused", "meanflow-db", "meanflow-fad", "net"]
    if "crate" in impls and "lightning" in nets:
        for it in light_steps:
            specs[("crate", lab(it, "lightning"))] = [CRATE, "--interface", it, "--net", "lightning"] + crate_common
    if "jax" in impls and "lightning" in nets:
        for it in ["sit", "meanflow"]:
            specs[("jax", lab(it, "lightning"))] = [JAX_PY, "benches/jax_step.py", "--interface", it, "--net", "lightning", "--serve"]
    if "torch" in impls and "lightning" in nets:
        for it in ["sit", "meanflow"]:
            specs[("torch", lab(it, "lightning"))] = [TORCH_PY, "benches/torch_dit.py", "--interface", it, "--net", "lightning"] + torch_common
            if not a.no_compile:
                specs[("torch", lab(it, "lightning") + "@compile")] = [TORCH_PY, "benches/torch_dit.py", "--interface", it, "--net", "lightning", "--compile"] + torch_common
    impls_dit = impls if "dit" in nets else []
    if "crate" in impls_dit:
        for it in crate_steps:
            specs[("crate", it)] = [CRATE, "--interface", it] + crate_common
        if not a.no_defaults:
            # The crate's defaults: math attention, the reference's fast-variance LayerNorm.
            ref = ["--attention", "math", "--layer-norm", "fast-variance"]
            specs[("crate", "sit@defaults")] = [CRATE, "--interface", "sit"] + ref + crate_common
            specs[("crate", "net@defaults")] = [CRATE, "--interface", "net"] + ref + crate_common
    if a.crate_baseline:
        for it in crate_steps:
            specs[("base", it)] = [os.path.abspath(a.crate_baseline), "--interface", it] + crate_common
    if "jax" in impls_dit:
        for it in ["sit", "edm", "meanflow", "sct"]:
            specs[("jax", it)] = [JAX_PY, "benches/jax_step.py", "--interface", it, "--serve"]
    if "torch" in impls_dit:
        for it in ["sit", "edm", "meanflow", "sct"]:
            specs[("torch", it)] = [TORCH_PY, "benches/torch_dit.py", "--interface", it] + torch_common
        if not a.no_compile:
            for it in ["sit", "meanflow", "sct"]:
                specs[("torch", it + "@compile")] = [TORCH_PY, "benches/torch_dit.py", "--interface", it, "--compile"] + torch_common

    load0 = loadavg()
    print(f"# {a.config} on {a.device}{' bf16' if a.bf16 else ''}, {a.threads} thread(s) each, "
          f"{a.rounds} rounds x {a.steps} steps, {os.cpu_count()} cores, "
          f"{'pinned to CPUs ' + ','.join(map(str, sorted(cpus))) if cpus else 'not pinned'}, load average {load0}", flush=True)
    workers = {}
    mem = {}
    failed = {}
    if cuda:
        # One GPU: the caching allocators of long-lived workers would keep their peak
        # reservations and starve each other, and a dedicated device needs no interleaving
        # against load. Each worker runs alone: start, warm up, all its steps, memory, quit.
        for key, cmd in specs.items():
            w = Worker(key[0], key[1], cmd, jax_env if key[0] == "jax" else env)
            try:
                w.ready()
                w.cmd_run(a.warmup, keep=False)
                w.cmd_run(a.rounds * a.steps)
                gpu_mem = nvidia_smi_mib()
                mem[key] = {"setup_kb": w.setup_kb, "warm_kb": w.warm_kb, "peak_kb": proc_kb(w.p.pid, "VmHWM"),
                            "gpu_mib": gpu_mem.get(w.p.pid), "cuda_max_allocated": w.extra.get("cuda_max_allocated_bytes")}
                workers[key] = w
                print(f"#   {key[0]}/{key[1]}: median {w.median():.1f} ms", flush=True)
            except SystemExit as e:
                failed[key] = str(e).strip().splitlines()[-1][:200]
                print(f"#   {key[0]}/{key[1]} failed: {failed[key]}", flush=True)
            finally:
                w.close()
    else:
        try:
            for key, cmd in specs.items():
                workers[key] = Worker(key[0], key[1], cmd, jax_env if key[0] == "jax" else env, cpus)
            for w in workers.values():
                w.ready()
            for key, w in workers.items():
                t0 = time.time()
                w.cmd_run(a.warmup, keep=False)
                print(f"#   warm-up {key[0]}/{key[1]}: {time.time() - t0:.1f} s", flush=True)
                w.trim()
                if not reset_hwm(w.p.pid):
                    print(f"#   (could not reset VmHWM of {key[0]}/{key[1]}: its peak includes the warm-up)")
            order = list(workers)
            for r in range(a.rounds):
                rot = order[r % len(order):] + order[:r % len(order)]
                for key in rot:
                    workers[key].cmd_run(a.steps)
                print(f"#   round {r + 1}/{a.rounds} done, load {loadavg()}", flush=True)
            for key, w in workers.items():
                mem[key] = {"setup_kb": w.setup_kb, "warm_kb": w.warm_kb, "peak_kb": proc_kb(w.p.pid, "VmHWM"),
                            "gpu_mib": None, "cuda_max_allocated": None}
        finally:
            for w in workers.values():
                w.close()
    load1 = loadavg()

    med = {k: w.median() for k, w in workers.items()}

    def g(impl, it):
        return med.get((impl, it), float("nan"))

    print()
    print(f"{'network':<11}{'interface':<16}{'crate_ms':>10}{'jax_ms':>10}{'torch_ms':>10}{'compile_ms':>12}{'ratio':>8}{'ratio_c':>9}")
    rows = [("sit", "sit", "sit"), ("edm", "edm", "edm"), ("meanflow-fused", "meanflow-fused", "meanflow"),
            ("meanflow-db", "meanflow-db", "meanflow"), ("meanflow-fad", "meanflow-fad", "meanflow"),
            ("sct-fused", "sct-fused", "sct"), ("sct-db", "sct-db", "sct")]
    table = []
    for net in nets:
        for label, cit, oit in rows:
            if net == "lightning" and label not in light_steps:
                continue
            c, j, t = g("crate", lab(cit, net)), g("jax", lab(oit, net)), g("torch", lab(oit, net))
            tc = g("torch", lab(oit, net) + "@compile")
            others = [v for v in (j, t) if v == v]
            ratio = c / min(others) if others else float("nan")
            with_c = [v for v in (j, t, tc) if v == v]
            ratio_c = c / min(with_c) if with_c else float("nan")
            table.append({"network": net, "interface": label, "crate_ms": c, "jax_ms": j, "torch_ms": t,
                          "torch_compile_ms": tc, "ratio": ratio, "ratio_with_compile": ratio_c})
            print(f"{net:<11}{label:<16}{c:>10.1f}{j:>10.1f}{t:>10.1f}{tc:>12.1f}{ratio:>8.2f}{ratio_c:>9.2f}")
    print("(ratio = crate / min(jax, torch eager); ratio_c also against torch.compile. meanflow / sct rows: the "
          "crate's JVP backend vs each implementation's one step; jax: jax.jvp under jit; torch: torch.func.jvp "
          "under no_grad + a forward with gradients)")
    print()

    def rel(a_, b_):
        return a_ / b_ if a_ == a_ and b_ == b_ and b_ else float("nan")

    mf = {}
    for net in nets:
        pre = "" if net == "dit" else "lightning "
        sit_c, sit_cc = g("crate", lab("sit", net)), g("torch", lab("sit", net) + "@compile")
        mf[pre + "crate-fused"] = rel(g("crate", lab("meanflow-fused", net)), sit_c)
        mf[pre + "crate-db"] = rel(g("crate", lab("meanflow-db", net)), sit_c)
        mf[pre + "crate-fad"] = rel(g("crate", lab("meanflow-fad", net)), sit_c)
        mf[pre + "jax"] = rel(g("jax", lab("meanflow", net)), g("jax", lab("sit", net)))
        mf[pre + "torch"] = rel(g("torch", lab("meanflow", net)), g("torch", lab("sit", net)))
        mf[pre + "torch-compile"] = rel(g("torch", lab("meanflow", net) + "@compile"), sit_cc)
    sct = {
        "crate-fused": rel(g("crate", "sct-fused"), g("crate", "sit")),
        "crate-db": rel(g("crate", "sct-db"), g("crate", "sit")),
        "jax": rel(g("jax", "sct"), g("jax", "sit")),
        "torch": rel(g("torch", "sct"), g("torch", "sit")),
        "torch-compile": rel(g("torch", "sct@compile"), g("torch", "sit@compile")),
    }
    if a.crate_baseline:
        print("crate vs baseline build (step ms, crate/base): " + "  ".join(
            f"{it} {g('crate', it):.1f}/{g('base', it):.1f}" for it in crate_steps))
    print("meanflow/sit step-time ratio: " + "  ".join(f"{k} {v:.2f}" for k, v in mf.items()))
    print("sct/sit step-time ratio:      " + "  ".join(f"{k} {v:.2f}" for k, v in sct.items()))
    over = {}
    for it, net in [("sit", "net"), ("edm", "net"), ("sit@defaults", "net@defaults"), (lab("sit", "lightning"), lab("net", "lightning"))]:
        s, b = g("crate", it), g("crate", net)
        if s == s and b == b:
            over[it] = {"step_ms": s, "net_ms": b, "overhead_pct": 100.0 * (s - b) / s}
    if over:
        print("interface overhead (crate step - bare DiT forward+backward on the same batch, % of step): "
              + "  ".join(f"{k} {v['overhead_pct']:+.1f}% ({v['step_ms']:.1f} vs {v['net_ms']:.1f} ms)" for k, v in over.items()))
    if ("crate", "sit@defaults") in workers:
        print(f"crate speed options (fused attention and LayerNorm) vs defaults (math attention, fast-variance "
              f"LayerNorm): sit {g('crate', 'sit'):.1f} vs {g('crate', 'sit@defaults'):.1f} ms; bare net "
              f"{g('crate', 'net'):.1f} vs {g('crate', 'net@defaults'):.1f} ms (the autograd JVPs: math attention, fused LayerNorm)")
    print()
    print(f"{'worker (memory, cores)':<32}{'setup_MB':>10}{'warm_MB':>10}{'peak_MB':>10}{'step_MB':>10}{'cores':>7}"
          + (f"{'gpu_MiB':>10}{'max_alloc_MB':>14}" if cuda else ""))
    off = []
    for key, m in mem.items():
        s, wm, p = (m[k] or 0 for k in ("setup_kb", "warm_kb", "peak_kb"))
        m["step_kb"] = p - wm
        m["cores"] = cores = workers[key].cores() if key in workers else float("nan")
        if not cuda and not abs(cores - a.threads) <= 0.15:
            off.append(f"{key[0]}/{key[1]} {cores:.2f}")
        line = (f"{key[0] + '/' + key[1]:<32}{s / 1024:>10.0f}{wm / 1024:>10.0f}{p / 1024:>10.0f}{(p - wm) / 1024:>10.0f}"
                f"{cores:>7.2f}")
        if cuda:
            ga, ma = m["gpu_mib"], m["cuda_max_allocated"]
            line += f"{ga if ga is not None else float('nan'):>10.0f}{(ma / 2**20) if ma else float('nan'):>14.0f}"
        print(line)
    ms = {}
    for net in nets:
        pre = "" if net == "dit" else "lightning "
        for label, impl, num, den in [("crate-fused", "crate", "meanflow-fused", "sit"), ("crate-db", "crate", "meanflow-db", "sit"),
                                      ("crate-fad", "crate", "meanflow-fad", "sit"), ("jax", "jax", "meanflow", "sit"),
                                      ("torch", "torch", "meanflow", "sit"), ("torch-compile", "torch", "meanflow@compile", "sit@compile"),
                                      ("sct crate-fused", "crate", "sct-fused", "sit"), ("sct crate-db", "crate", "sct-db", "sit"),
                                      ("sct jax", "jax", "sct", "sit"), ("sct torch", "torch", "sct", "sit")]:
            if net == "lightning" and label.startswith("sct"):
                continue
            sfx = lambda w: lab(w.split("@")[0], net) + ("@" + w.split("@")[1] if "@" in w else "")
            a_, b_ = mem.get((impl, sfx(num))), mem.get((impl, sfx(den)))
            if a_ and b_ and b_.get("step_kb"):
                ms[pre + label] = a_["step_kb"] / b_["step_kb"]
    if ms:
        print("meanflow (sct) / sit step-memory ratio: " + "  ".join(f"{k} {v:.2f}" for k, v in ms.items()))
    if cuda:
        arch = ARCH[a.config]
        b = a.batch or arch["B"]
        print(f"\nthroughput ({a.config}, batch {b}; model FLOPs: forward x3, MeanFlow x6; "
              f"fraction of the H200's {H200_BF16_PEAK_TFLOPS:.0f} TFLOP/s bf16 peak)")
        for key, w in workers.items():
            light = LIGHTNING in key[1]
            it = key[1].split("@")[0].removesuffix(LIGHTNING)
            if it in ("net",):
                continue
            mf = it.startswith("meanflow")
            fl = dit_forward_flops(arch["D"], arch["T"], arch["L"], arch["P"], arch["F"], arch["M"], 2 if mf else 1, swiglu=light)
            fl *= b * (6.0 if mf else 4.0 if it.startswith("sct") else 3.0)
            t = med[key] * 1e-3
            tf = fl / t / 1e12
            print(f"  {key[0] + '/' + key[1]:<22} {b * arch['T'] / t:>12.0f} tokens/s {tf:>8.1f} TFLOP/s "
                  f"{100 * tf / H200_BF16_PEAK_TFLOPS:>6.1f}% of peak")
    if off:
        print(f"warning: these workers did not use {a.threads} core(s) during their timed steps, so the ratios "
              f"compare unequal machines: {', '.join(off)}")
    for key, why in failed.items():
        print(f"failed: {key[0]}/{key[1]}: {why}")
    print(f"load average: start {load0}, end {load1}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "load": [load0, load1], "table": table, "meanflow_over_sit": mf, "sct_over_sit": sct,
                       "step_memory_over_sit": ms,
                       "overhead": over, "memory": {f"{k[0]}/{k[1]}": v for k, v in mem.items()},
                       "times_ms": {f"{k[0]}/{k[1]}": w.times for k, w in workers.items()},
                       "info": {f"{k[0]}/{k[1]}": w.info for k, w in workers.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
