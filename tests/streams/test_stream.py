"""Label spaces per protocol (docs/streams.md) and stream validation."""

import pytest
import torch
from toys import toy_stream

from cl_bench.contracts.stream import DEFAULT_TEMPLATES, Stream, StreamTask


def test_class_il_scores_the_classes_of_tasks_one_to_max_of_row_and_column():
    stream = toy_stream("class-il", tasks=3)
    # task classes: [0,1], [2,3], [4,5]
    assert stream.label_space(0, 0) == [0, 1]  # before training, task 1: tasks 1..1
    assert stream.label_space(0, 2) == [0, 1, 2, 3, 4, 5]  # before training, task 3: tasks 1..3
    assert stream.label_space(2, 0) == [0, 1, 2, 3]  # after task 2, task 1: tasks 1..2
    assert stream.label_space(3, 1) == [0, 1, 2, 3, 4, 5]


def test_mtil_scores_each_task_in_its_own_classes():
    stream = toy_stream("mtil", tasks=3)
    assert [stream.label_space(r, 1) for r in range(4)] == [[2, 3]] * 4


def test_x_tail_scores_the_union_of_all_domains_always():
    stream = toy_stream("x-tail", tasks=3)
    assert all(stream.label_space(r, c) == [0, 1, 2, 3, 4, 5] for r in range(4) for c in range(3))


def test_domain_il_shares_one_label_space():
    stream = toy_stream("domain-il", tasks=3)
    assert stream.task_classes == [[0, 1]] * 3
    assert all(stream.label_space(r, c) == [0, 1] for r in range(4) for c in range(3))


def test_experience_view_and_batches():
    stream = toy_stream("mtil", tasks=2, per_class=8)
    exp = stream.experience(1)
    assert (exp.index, exp.name, exp.classes) == (1, "task 1", [2, 3])
    batches = list(exp.batches(batch_size=5))
    assert sum(len(y) for _, y in batches) == 16 and set(int(t) for _, y in batches for t in y) == {2, 3}
    assert len(list(exp.batches(batch_size=5, limit=2))) == 2


def test_prompts_use_templates_and_per_class_overrides():
    stream = toy_stream("mtil", tasks=1, control=False)
    stream.class_templates = {1: ("a sketch of a {}.", "a {}.")}
    assert stream.prompts() == [["a photo of a class 0."], ["a sketch of a class 1.", "a class 1."]]


def test_invalid_streams_are_refused():
    good = toy_stream("mtil", tasks=2)
    fields = dict(
        name="x", version="1", protocol="mtil", benchmark=good.benchmark, class_names=list(good.class_names), task_names=["a", "b"], task_classes=good.task_classes,
        control_names=good.control_names, control_classes=good.control_classes,
    )
    Stream(**fields)  # the reference: valid
    with pytest.raises(ValueError, match="unique"):
        Stream(**{**fields, "class_names": ["same"] * len(good.class_names)})
    with pytest.raises(ValueError, match="protocol"):
        Stream(**{**fields, "protocol": "task-il"})
    with pytest.raises(ValueError, match="experiences"):
        Stream(**{**fields, "task_names": ["a", "b", "c"], "task_classes": [[0], [1], [2]]})
    with pytest.raises(ValueError, match="domain-il"):
        Stream(**{**fields, "protocol": "domain-il"})


def _data(targets: list[int]):
    from cl_bench.contracts.stream import classification_dataset

    return classification_dataset(torch.zeros(len(targets), 1, 2, 2), torch.tensor(targets))


def test_assemble_stream_builds_the_benchmark_and_the_stream_from_task_records():
    from cl_bench import StreamTask, assemble_stream

    tasks = [StreamTask("a", [0, 1], _data([0, 1, 1]), _data([0, 1])), StreamTask("b", [2], _data([2]), _data([2, 2]))]
    stream = assemble_stream("s", "1", "class-il", tasks, class_names=["x", "y", "z", "c"], controls=[StreamTask("ctl", [3], test=_data([3]))], params={"tasks": 2})
    assert stream.task_names == ["a", "b"] and stream.task_classes == [[0, 1], [2]] and stream.test_sizes() == [2, 2]
    assert stream.control_names == ["ctl"] and stream.control_classes == [[3]] and len(stream.benchmark.streams["control"]) == 1
    assert [len(e.dataset) for e in stream.benchmark.streams["train"]] == [3, 1] and stream.params == {"tasks": 2}
    assert stream.templates == DEFAULT_TEMPLATES and not stream.preload


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(tasks=[]), "no tasks"),
        (dict(class_names=["x", "y", "z", "c", "unused"]), r"class ids \[4\] \(1 in all\) belong to no task or control set"),
        (dict(class_names=["x", "y"]), r"task 'b': classes must be distinct ids 0..1, got \[2\]"),
        (dict(tasks=[StreamTask("a", [0, 0, 1], _data([0]), _data([0])), StreamTask("b", [2], _data([2]), _data([2]))]), "classes must be distinct"),
        (dict(tasks=[StreamTask("a", [0, 1], None, _data([0])), StreamTask("b", [2], _data([2]), _data([2]))]), "task 'a' needs training and test data"),
        (dict(controls=[StreamTask("ctl", [3], _data([3]), _data([3]))]), "control set 'ctl' needs test data and no training data"),
        (dict(controls=[StreamTask("ctl", [2, 3], test=_data([3]))]), r"control classes \[2\] are trained by a task"),
        (dict(tasks=[StreamTask("a", [0, 1], _data([0, 2]), _data([0])), StreamTask("b", [2], _data([2]), _data([2]))]), r"task 'a': its data has targets \[2\] outside its classes"),
        (dict(class_templates={7: ["a {}."]}), "class_templates keys must be class ids 0..3"),
    ],
)
def test_assemble_stream_refuses_records_that_do_not_match(change, message):
    from cl_bench import assemble_stream

    arguments = dict(
        tasks=[StreamTask("a", [0, 1], _data([0, 1]), _data([0, 1])), StreamTask("b", [2], _data([2]), _data([2]))],
        class_names=["x", "y", "z", "c"],
        controls=[StreamTask("ctl", [3], test=_data([3]))],
    )
    arguments.update(change)
    tasks = arguments.pop("tasks")
    with pytest.raises(ValueError, match=message):
        assemble_stream("s", "1", "mtil", tasks, **arguments)
