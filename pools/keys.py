"""The Kubernetes keys eipdash reads and writes on nodes: a public interface (node groups register with
the taint, other tools read the label and annotation), so each is spelled once, here. Pure constants:
settings, the adapters and the sandbox import them without a configured Django."""

from __future__ import annotations

# The startup taint new nodes register with; lifted once the node's EIP is confirmed, put back before
# it leaves a live node. Its default: EIPDASH_STARTUP_TAINT may name another key.
STARTUP_TAINT_KEY = "eipdash.io/eip-pending"
# The node's EIP, as a label (value: the public IP) and an annotation (value: the allocation id).
EIP_LABEL = "eipdash.io/eip"
ALLOCATION_ANNOTATION = "eipdash.io/allocation-id"
# The fencing numbers of the passes that last wrote the node, by launch spec id, as JSON ({"7": 42}): every
# write of a pass compares and sets its own in the same resourceVersion-conditioned patch, so that the API
# server refuses the write of a pass that lost its spec to a newer holder (pools/locks.py).
FENCE_ANNOTATION = "eipdash.io/fence"
