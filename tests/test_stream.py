"""Label spaces per protocol (DESIGN section 7) and stream validation."""

import pytest

from cl_bench.stream import Stream

from toys import toy_stream


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
