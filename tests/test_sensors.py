"""kdutils.sensors: the two-sensor task shared by notebook 05 and assignment a2."""
import pytest
import torch

from kdutils import data, models, sensors, train


def test_two_sensors_are_the_same_recordings_with_and_without_noise():
    x_train, y_train, x_test, y_test = sensors.two_sensors(300, seed=7)
    assert x_train.shape[1:] == (2, 40) and x_test.shape[1:] == (2, 40)
    assert len(x_train) == len(y_train) and len(x_test) == len(y_test)
    field = data.load_mnist1d(num_samples=300, seed=7)
    assert torch.equal(x_train[:, 0], field.x_train) and torch.equal(y_train, field.y_train)
    # the lab channel is the same signal without the noise: close to the field channel, not equal to it
    diff = (x_train[:, 0] - x_train[:, 1]).abs().mean()
    assert 0 < diff < x_train[:, 0].abs().mean()


def test_simplify_keeps_the_field_channel_and_zeros_the_lab_one():
    x = torch.randn(5, 2, 40)
    s = sensors.simplify(x)
    assert torch.equal(s[:, 0], x[:, 0]) and (s[:, 1] == 0).all()
    with pytest.raises(ValueError, match=r"\(N, 2, length\)"):
        sensors.simplify(torch.randn(5, 40))
    with pytest.raises(ValueError, match="two-sensor"):
        sensors.simplify(torch.randn(5, 3, 40))


def test_distil_feeds_the_student_what_it_is_given_and_the_teacher_x():
    x_train, y_train, _, _ = sensors.two_sensors(300, seed=7)
    teacher = models.MNIST1DCNN(in_channels=2, channels=8)
    train.fit(teacher, x_train, y_train, epochs=1, progress=False)
    xs = sensors.simplify(x_train)
    a, run_a = sensors.distil(teacher, xs, None, teacher_x=x_train, epochs=1, seed=3, progress=False)
    b, run_b = sensors.distil(teacher, xs, None, teacher_x=x_train, epochs=1, seed=3, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())), "same seed, same student"
    assert (run_a.fed[:, 1] == 0).all(), "the student was fed x'"
    assert run_a.steps == 3                              # 300 rows, batches of 100, one epoch
    with pytest.raises(ValueError, match="alpha = 1"):   # without labels the objective is the KL alone
        sensors.distil(teacher, xs, None, teacher_x=x_train, alpha=0.5, epochs=1, progress=False)
