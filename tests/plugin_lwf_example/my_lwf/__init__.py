"""Learning without Forgetting (Li and Hoiem, 2016) on CLIP, written with cl_bench's public API only.

Both towers fine-tune on each task, as `finetune` does; from the second task on, a frozen copy of
the model as the previous task left it (the teacher) scores each training batch over every class
seen so far, and the student is pulled towards those scores.
"""

import cl_bench


class LwF(cl_bench.Method):
    def __init__(self, hparams):
        if hparams["weight"] < 0:
            raise ValueError(f"weight must be at least 0, not {hparams['weight']}")
        if hparams["temperature"] <= 0:
            raise ValueError(f"temperature must be positive, not {hparams['temperature']}")
        self.weight = hparams["weight"]
        self.temperature = hparams["temperature"]
        self.teacher = None
        self.classes = []

    def trainable_parameters(self, model):
        return [*model.tower_parameters("image"), *model.tower_parameters("text")]

    def before_experience(self, model, experience):
        # The model here is the one the previous task left (a resumed run restores exactly this
        # model at this boundary), so the teacher needs no saving. No teacher before the first task.
        self.classes = experience.seen_classes  # this task's classes and every earlier task's
        self.teacher = cl_bench.Teacher(model) if experience.index > 0 and self.weight > 0 else None

    def extra_loss(self, model, batch, outputs):
        if self.teacher is None:
            return None  # weight 0 or the first task: plain fine-tuning
        images = batch[0]
        # `outputs` only hold the current task's classes (-inf elsewhere): score the seen classes.
        student = model.scores(images, self.classes)
        teacher = self.teacher.scores(images, self.classes)
        return self.weight * cl_bench.distillation_loss(student, teacher, self.temperature)


@cl_bench.hookimpl
def cl_bench_methods():
    return [
        cl_bench.MethodSpec(
            name="my-lwf",
            factory=LwF,
            summary="LwF: fine-tuning plus distillation from the previous task's model over the seen classes",
            paper="https://arxiv.org/abs/1606.09282",
            supports=cl_bench.Supports(protocols=cl_bench.IMAGE_PROTOCOLS, backbone_kinds=("clip",)),
            defaults={"weight": 1.0, "temperature": 2.0, "lr": 1e-5, "iters": 1000},
            profiles={"tiny-clip": {"lr": 3e-4, "iters": 200}},
        )
    ]
