"""Multimodal learned sparse retrieval: all logic of the numbered notebook stages.

Importing the package does nothing, except in a stage kernel started by ``lsr_lib.run.pipeline``
(``$LSR_CHECKOUT`` set): there it first checks that this is the checkout the run was launched
for (:mod:`lsr_lib.run.checkout`, issue 12).
"""

import os as _os

if _os.environ.get("LSR_CHECKOUT"):
    from .run.checkout import check_kernel_checkout as _check_kernel_checkout

    _check_kernel_checkout()
