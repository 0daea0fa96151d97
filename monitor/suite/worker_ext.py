"""Worker extension loaded into vLLM's worker process, so the suite can read back what the
loaded model actually runs with (head dtype, attention backend) instead of trusting the config."""

from __future__ import annotations

from typing import Any


class ParityWorkerExtension:
    """Mixed into vLLM's worker class through `worker_extension_cls`; called by name with
    `collective_rpc`, so nothing is pickled."""

    model_runner: Any

    def parity_model_facts(self) -> dict[str, Any]:
        runner = self.model_runner
        model = runner.get_model() if hasattr(runner, "get_model") else runner.model
        lm_head = getattr(model, "lm_head", None)
        logits_processor = getattr(model, "logits_processor", None)
        head_dtype = getattr(logits_processor, "head_dtype", None)
        weight = getattr(lm_head, "weight", None)
        param_dtypes = sorted({str(p.dtype) for p in model.parameters()})
        return {
            "model_runner": type(runner).__name__,
            "model_class": type(model).__name__,
            "lm_head_weight_dtype": str(weight.dtype) if weight is not None else None,
            "head_dtype": str(head_dtype) if head_dtype is not None else None,
            "param_dtypes": param_dtypes,
            "attention_backend": _attention_backend(model),
        }

    def parity_weight_sample(self) -> list[float]:
        """The first few values of every parameter, in a fixed order: enough to see whether a
        reload changed the weights the engine computes with."""
        runner = self.model_runner
        model = runner.get_model() if hasattr(runner, "get_model") else runner.model
        sample: list[float] = []
        for _, param in sorted(model.named_parameters()):
            sample.extend(param.detach().flatten()[:SAMPLE_PER_PARAMETER].double().tolist())
        return sample


SAMPLE_PER_PARAMETER = 16


def _attention_backend(model: Any) -> str | None:
    for module in model.modules():
        backend = getattr(module, "attn_backend", None)
        if backend is not None:
            get_name = getattr(backend, "get_name", None)
            return str(get_name()) if callable(get_name) else type(backend).__name__
    return None
