"""The audit's words (pools/audit.py): which events a change of the configuration makes, and their reasons."""

from __future__ import annotations

from pools.audit import ClusterState, SpecState, cluster_events, role_event, role_of, spec_events, token_actor

WEB = SpecState(cluster="prod", labels="pool=web", tag_key="eipdash/pool", tag_value="web", enabled=True)


def test_spec_events_name_what_changed_in_the_documents_words() -> None:
    assert spec_events(WEB, WEB) == []
    (created,) = spec_events(None, WEB)
    assert created == ("spec_created", "created: cluster 'prod', labels 'pool=web', pool 'eipdash/pool=web', enabled")
    wider = SpecState("prod", "pool=web", "eipdash/pool", None, True)
    assert spec_events(WEB, wider) == [("spec_updated", "tagValue 'web' -> None")]
    assert spec_events(WEB, None) == [("spec_deleted", "deleted: it held no EIP")]


def test_turning_a_spec_off_or_on_is_its_own_event_beside_the_other_changes() -> None:
    """"Who disabled it" is one filter: the flip is never buried in an update's diff."""
    off = SpecState("prod", "pool=api", "eipdash/pool", "web", False)
    assert spec_events(WEB, off, why="pruned by a sync: no document names it") == [
        ("spec_updated", "labels 'pool=web' -> 'pool=api' (pruned by a sync: no document names it)"),
        ("spec_disabled", "disabled: its nodes drain, no new EIP (pruned by a sync: no document names it)"),
    ]
    assert [kind for kind, _ in spec_events(off, WEB)] == ["spec_updated", "spec_enabled"]


def test_cluster_events_say_added_changed_and_deleted() -> None:
    eu = ClusterState("eu-west-1", "eu", "")
    assert cluster_events("eu", None, eu) == [
        ("cluster_added", "cluster 'eu' added: region 'eu-west-1', kube context 'eu', kubeconfig '(default)'")]
    moved = ClusterState("eu-west-1", "eu-2", "/etc/eipdash/kube/eu")
    assert cluster_events("eu", eu, moved) == [
        ("cluster_changed", "cluster 'eu': kube context 'eu' -> 'eu-2', kubeconfig '' -> '/etc/eipdash/kube/eu'")]
    assert cluster_events("eu", eu, eu) == []
    assert [kind for kind, _ in cluster_events("eu", eu, None)] == ["cluster_deleted"]


def test_a_role_is_what_the_account_may_do() -> None:
    assert role_of(active=True, superuser=False, groups=["viewers"]) == "viewer"
    assert role_of(active=True, superuser=False, groups=["viewers", "operators"]) == "operator"
    assert role_of(active=True, superuser=True, groups=[]) == "admin"
    assert role_of(active=False, superuser=True, groups=["operators"]) == "inactive"
    assert role_of(active=True, superuser=False, groups=["elsewhere"]) == "no group"
    # Write permissions beyond the word (one by one, or a group's own) are part of the role.
    assert role_of(active=True, superuser=False, groups=["viewers"],
                   permissions=["pools.reassign_elasticip", "auth.view_user"]) == "viewer + pools.reassign_elasticip"
    assert role_of(active=True, superuser=False, groups=["operators"],
                   permissions=["pools.add_launchspec", "pools.change_launchspec", "pools.reassign_elasticip"]
                   ) == "operator - pools.delete_launchspec"
    assert role_event("bob", "viewer", "viewer") is None
    assert role_event("bob", "viewer", "operator") == ("role_changed", "user 'bob': viewer -> operator")


def test_a_token_actor_names_the_user_and_the_tokens_clear_prefix() -> None:
    assert token_actor("alice", "eipd_Ab12Cd34") == "alice (API token eipd_Ab12Cd34)"
