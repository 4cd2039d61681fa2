"""FP8 view row of the benchmark: the first read of the FP8 view (-o quant=fp8) against the first
read of the bf16 view of the same checkpoint, same mount options otherwise, both on fresh mounts
with the rank files warm, alternating which goes first run by run. Target: the FP8 view's first
read takes at most twice the bf16 view's (speed >= 0.5x). bench.py calls measure() and report()."""


def argv_maker(mcorefs, shard, work):
    """argv_of for measure(): the daemon in the foreground with bench.py's shard size, at the
    kernel's default readahead (read_ahead_kb=-1, as bench.py's "default" rows), plus extra."""
    def argv_of(m, extra, mnt):
        opts = "true_vocab_size=%d,shard_size=%s,read_ahead_kb=-1%s" % (m["vocab"], shard, "," + extra if extra else "")
        return [mcorefs, str(m["ckpt"]), str(work / mnt), "-f", "-o", opts], work / mnt
    return argv_of


def measure(m, runs, Mount, argv_of, read_files, warm, drop_caches, log):
    """m: a model dict of bench.py (prepared); argv_of(m, extra_opts, mnt) -> (argv, mountpoint).
    Returns {"bf16": [s...], "fp8": [s...], "bf16_bytes": n, "fp8_bytes": n}."""
    out = {"bf16": [], "fp8": [], "bf16_bytes": 0, "fp8_bytes": 0}
    for r in range(runs):
        order = [("bf16", ""), ("fp8", "quant=fp8")]
        if r % 2:
            order.reverse()
        for key, opt in order:
            drop_caches()
            warm(m["warm"])
            argv, mnt = argv_of(m, opt, "mcorefs-" + key)
            with Mount(argv, mnt, "config.json") as mt:
                files = sorted(p for p in mt.mnt.iterdir() if p.name.endswith(".safetensors"))
                n, t = read_files(files)
            out[key].append(t)
            out[key + "_bytes"] = n
        log("%s fp8 run %d/%d: bf16 view %.2f s, FP8 view %.2f s" % (m["name"], r + 1, runs, out["bf16"][-1], out["fp8"][-1]))
    return out


def report(T, name, res, med):
    """Rows for bench.py's table: both first reads, then the ratio against the target."""
    if not res or not res["fp8"]:
        return
    T.section("FP8 view (-o quant=fp8, DeepSeek-V3 block layout, quantized on read): %s" % name)
    T.row("bf16 view first read (baseline, same run)", res["bf16"], nbytes=res["bf16_bytes"])
    T.row("FP8 view first read", res["fp8"], nbytes=res["fp8_bytes"],
          note="%.0f%% of the bf16 bytes" % (100.0 * res["fp8_bytes"] / max(res["bf16_bytes"], 1)))
    speed = med(res["bf16"]) / med(res["fp8"])
    T.ratio("FP8 first read speed vs bf16 first read (time ratio)", speed, ">= 0.5x", speed >= 0.5, "%.2fx" % speed)
