"""The steps of a pass, one module each, as functions of the pass's context (workers/pass_context.py).

In the order a pass applies them (workers/apply.py): taint (I1 first), release, adopt, assign, ready. Each
keeps the invariants of the README's "How it works"; the decisions they take are pure code in pools/
(pools/planner.py, pools/release_rule.py), which the steps ask and never restate.
"""
