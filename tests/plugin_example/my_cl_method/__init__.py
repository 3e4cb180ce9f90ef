import cl_bench


class BitFit(cl_bench.Method):
    """Train only the image tower's bias terms (BitFit)."""

    def __init__(self, hparams):
        self.hparams = hparams

    def trainable_parameters(self, model):
        return [p for name, p in model.clip.visual.named_parameters() if name.endswith("bias")]


@cl_bench.hookimpl
def cl_bench_methods():
    return [
        cl_bench.MethodSpec(
            name="bitfit",
            factory=BitFit,
            summary="train the image tower's biases only",
            paper="https://arxiv.org/abs/2106.10199",
            defaults={"lr": 1e-3, "iters": 100},
        )
    ]
