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


def test_training_views_do_not_depend_on_the_checkout_folder(tmp_path):
    """Views were once seeded by the file path, so every clone trained on other views (issue 13)."""
    from PIL import Image

    from lsr_lib.stages.cache_dense_features import render_view

    rng = np.random.default_rng(0)
    pic = Image.fromarray(rng.integers(0, 255, (64, 64, 4), dtype=np.uint8), "RGBA")
    paths = []
    for folder in ("clone_a/data/emoji", "elsewhere/clone_b/data/emoji"):
        (tmp_path / folder).mkdir(parents=True)
        pic.save(tmp_path / folder / "1F600.png")
        paths.append(str(tmp_path / folder / "1F600.png"))
    a, b = (np.asarray(render_view(p, "view0", 0, "1F600")) for p in paths)
    assert np.array_equal(a, b)
    # another image id, another view
    assert not np.array_equal(a, np.asarray(render_view(paths[0], "view0", 0, "1F601")))
    assert not np.array_equal(a, np.asarray(render_view(paths[0], "view0", 1, "1F600")))  # another view seed
