"""Minimal baseline for bench/suite_cost.py: the same engine starts, generations and trainer
forwards that a suite run recorded, with plain vLLM and transformers calls and nothing else.

Run inside the release environment: python baseline_replay.py RESULT.json MODEL_CACHE_DIR"""

import json
import sys
import time
from pathlib import Path


def main() -> None:
    result = json.loads(Path(sys.argv[1]).read_text())
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from monitor.suite.models import resolve_model

    clock = time.perf_counter()
    model_dir = resolve_model(
        result["config"]["model"], __import__("pathlib").Path(sys.argv[2])
    ).path
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    from monitor.suite.prompts import load_prompts

    prompts = [tokenizer.encode(p.text) for p in load_prompts()]
    config = result["config"]
    longest = max(len(p) for p in prompts)
    max_model_len = min(-(-(longest + config["max_tokens"] + 8) // 64) * 64, 4096)
    outputs = []
    for engine in result["engines"]:
        if not engine["started"]:
            continue
        kwargs = {k: v for k, v in engine["requested"].items()}
        llm = LLM(
            model=model_dir,
            tokenizer=model_dir,
            seed=config["seed"],
            enforce_eager=True,
            max_model_len=max_model_len,
            **kwargs,
        )
        for op in engine["operations"]:
            if op["op"] == "generate":
                params = SamplingParams(
                    temperature=op["temperature"],
                    top_p=op["top_p"],
                    top_k=op["top_k"],
                    max_tokens=op["max_tokens"],
                    logprobs=1,
                    ignore_eos=True,
                )
                batch = [TokensPrompt(prompt_token_ids=prompts[i]) for i in op["prompts"]]
                if op["batched"]:
                    done = llm.generate(batch, params, use_tqdm=False)
                else:
                    done = [llm.generate([p], params, use_tqdm=False)[0] for p in batch]
                outputs += [list(o.prompt_token_ids) + list(o.outputs[0].token_ids) for o in done]
            elif op["op"] == "prompt_logprobs":
                params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
                llm.generate(
                    [TokensPrompt(prompt_token_ids=s) for s in outputs[-op["n"] :]],
                    params,
                    use_tqdm=False,
                )
            elif op["op"] == "reload_weights":
                llm.collective_rpc("reload_weights", kwargs={"weights_path": op["path"]})
            elif op["op"] == "reset_prefix_cache":
                llm.reset_prefix_cache()
        llm.llm_engine.engine_core.shutdown()
        del llm
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        for i in range(result["trainer_forwards"]):
            sequence = outputs[i % len(outputs)]
            torch.log_softmax(model(input_ids=torch.tensor([sequence])).logits[0].double(), -1)
    print(json.dumps({"baseline_seconds": time.perf_counter() - clock}))


if __name__ == "__main__":
    main()
