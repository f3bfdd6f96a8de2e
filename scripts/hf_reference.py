#!/usr/bin/env python3
"""The reference point of issue 6: Hugging Face transformers' continuous batching
(`generate_batch`) on the workload of `nanoflow bench offline`, on the same GPU.

Random bf16 weights in a model of the preset's shape (as nanoflow's dummy:<preset>), N requests
of random prompt ids with constant input and output lengths, EOS ignored. Prints and writes a JSON
object with the fields bench offline writes (total/output tokens/s, requests/s), the command,
the transformers version and the GPU.

  python3 scripts/hf_reference.py --preset llama3-8b --num-requests 512 --input-len 1024 \\
      --output-len 512 --result-json bench/results/hf_generate_batch_llama3-8b_1024_512.json

--preset tiny runs a small model on the CPU (for checking the script without a GPU).
"""
import argparse
import json
import os
import subprocess
import sys
import time

PRESETS = {
    # hidden, intermediate, heads, kv heads, layers, vocab, rope theta
    "llama3-8b": (4096, 14336, 32, 8, 32, 128256, 500000.0),
    "llama2-7b": (4096, 11008, 32, 32, 32, 32000, 10000.0),
    "tiny": (256, 512, 4, 2, 2, 1024, 10000.0),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="llama3-8b", choices=sorted(PRESETS))
    ap.add_argument("--num-requests", type=int, default=512)
    ap.add_argument("--input-len", type=int, default=1024)
    ap.add_argument("--output-len", type=int, default=512)
    ap.add_argument("--attn", default="paged|sdpa",
                    help="attention implementation for generate_batch (tried first; then "
                         "sdpa_paged, sdpa)")
    ap.add_argument("--result-json")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    H, I, nq, nkv, L, V, theta = PRESETS[args.preset]
    cfg = LlamaConfig(hidden_size=H, intermediate_size=I, num_attention_heads=nq,
                      num_key_value_heads=nkv, num_hidden_layers=L, vocab_size=V,
                      max_position_embeddings=max(8192, args.input_len + args.output_len + 16),
                      rope_theta=theta)
    torch.manual_seed(0)
    t0 = time.time()
    torch.set_default_dtype(dtype)
    with torch.device(dev):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.eval()
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    init_s = time.time() - t0

    g = torch.Generator().manual_seed(1)
    inputs = [torch.randint(0, V, (args.input_len,), generator=g).tolist()
              for _ in range(args.num_requests)]
    gc = GenerationConfig(max_new_tokens=args.output_len, min_new_tokens=args.output_len,
                          do_sample=False, eos_token_id=None, pad_token_id=0)
    errors = {}
    result = None
    for attn in [args.attn] + [a for a in ("sdpa_paged", "sdpa") if a != args.attn]:
        try:
            model.set_attn_implementation(attn)
            # Warm-up: a few short requests.
            model.generate_batch(inputs=[x[:16] for x in inputs[:2]],
                                 generation_config=GenerationConfig(
                                     max_new_tokens=4, min_new_tokens=4, do_sample=False,
                                     eos_token_id=None, pad_token_id=0),
                                 progress_bar=False)
            if dev == "cuda":
                torch.cuda.synchronize()
            t = time.time()
            outs = model.generate_batch(inputs=inputs, generation_config=gc, progress_bar=False)
            if dev == "cuda":
                torch.cuda.synchronize()
            dt = time.time() - t
            generated = sum(len(o.generated_tokens) for o in outs.values())
            result = {"attn_implementation": attn, "elapsed_s": dt, "output_tokens": generated}
            break
        except Exception as e:  # an attention implementation this version lacks: try the next
            errors[attn] = repr(e)[:400]
    if result is None:
        print(json.dumps({"errors": errors}, indent=1))
        sys.exit(1)
    # As nanoflow records it (common/shell.cpp): NF_GIT_COMMIT first, for machines whose copy
    # of the tree has no (or a stale) .git, then git.
    commit = os.environ.get("NF_GIT_COMMIT") or None
    if commit is None:
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip() or None
        except OSError:
            commit = None
    dt = result["elapsed_s"]
    prompt_tokens = args.num_requests * args.input_len
    j = {
        "engine": "transformers generate_batch (continuous batching)",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "model": f"random {args.preset} shape ({'bf16' if dtype == torch.bfloat16 else 'fp32'})",
        "gpu": torch.cuda.get_device_name(0) if dev == "cuda" else None,
        "git_commit": commit,
        "command": " ".join(["python3"] + sys.argv),
        "num_requests": args.num_requests,
        "input_len": args.input_len,
        "output_len": args.output_len,
        "prompt_tokens": prompt_tokens,
        **result,
        "total_tokens_per_s": (prompt_tokens + result["output_tokens"]) / dt,
        "output_tokens_per_s": result["output_tokens"] / dt,
        "requests_per_s": args.num_requests / dt,
        "model_init_s": init_s,
        "errors_of_other_attn_implementations": errors,
    }
    print(json.dumps(j, indent=1))
    if args.result_json:
        with open(args.result_json, "w") as f:
            json.dump(j, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
