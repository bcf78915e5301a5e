"""Style augmentations: deterministic given a generator, RGB output, named eval transforms."""
import numpy as np
import pytest
from PIL import Image

from lsr_lib.data.image_augment import EVAL_TRANSFORMS, eval_transform, random_view, stroke


def _img():
    im = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    im.paste((200, 30, 30, 255), (8, 8, 24, 24))
    return im


def test_random_view_is_seeded():
    a = random_view(_img(), np.random.default_rng(3))
    b = random_view(_img(), np.random.default_rng(3))
    assert a.mode == "RGB" and np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name", list(EVAL_TRANSFORMS))
def test_eval_transforms_change_the_image(name):
    out = eval_transform(name)(_img())
    assert out.mode == "RGB" and out.size == (32, 32)
    if name != "clean":
        assert not np.array_equal(np.asarray(out), np.asarray(EVAL_TRANSFORMS["clean"](_img())))


def test_unknown_transform_and_thicker_stroke():
    with pytest.raises(KeyError, match="unknown eval transform"):
        eval_transform("sepia")
    assert (np.asarray(stroke(_img(), 2))[..., 3] > 0).sum() > (np.asarray(_img())[..., 3] > 0).sum()
