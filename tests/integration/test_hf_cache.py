"""The cache inventory and deletion of ``ocrd.cache.inventory`` on tiny models in a real HF layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from huggingface_hub import scan_cache_dir

from ocrd.cache.inventory import cached_model_repos, delete_cached, scan_repos
from tests.support.tiny_models import build_tiny_model, repo_folder

REPO = "ocrd-test/tiny-llava"
OTHER = "ocrd-test/other-llava"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory):
    """Two repos; REPO has two revisions (seed 1 is the newer one, on main). Built once. OTHER's
    only revision has the same commit hash as REPO's old one (same content): deletes must not mix
    them up."""
    hub_dir = tmp_path_factory.mktemp("template") / "hub"
    old = build_tiny_model("llava", hub_dir, REPO, seed=0)
    new = build_tiny_model("llava", hub_dir, REPO, seed=1)
    other = build_tiny_model("llava", hub_dir, OTHER, seed=0)
    return hub_dir, old, new, other


@pytest.fixture
def hub(template, tmp_path: Path):
    """A copy of the template each test may delete from (relative symlinks copied as links)."""
    source, old, new, other = template
    hub_dir = tmp_path / "hub"
    shutil.copytree(source, hub_dir, symlinks=True)
    return hub_dir, old, new, other


def test_scan_repos_of_a_missing_cache_is_empty(tmp_path):
    assert scan_repos(tmp_path / "absent") == []


def test_scan_repos_lists_revisions_refs_and_sizes(hub):
    hub_dir, old, new, _ = hub
    repos = {repo.repo_id: repo for repo in scan_repos(hub_dir)}
    assert sorted(repos) == [OTHER, REPO]
    repo = repos[REPO]
    assert repo.repo_type == "model"
    assert {rev.commit for rev in repo.revisions} == {old.revision, new.revision}
    refs = {rev.commit: rev.refs for rev in repo.revisions}
    assert refs == {new.revision: ("main",), old.revision: ()}
    assert all(rev.size_bytes > 0 and rev.last_modified > 0 for rev in repo.revisions)
    # Blobs shared between revisions count once.
    assert max(rev.size_bytes for rev in repo.revisions) <= repo.size_bytes
    assert repo.size_bytes <= sum(rev.size_bytes for rev in repo.revisions)
    assert repo.last_accessed > 0 and repo.last_modified > 0


def test_dry_run_reports_bytes_and_paths_and_deletes_nothing(hub):
    hub_dir, *_ = hub
    before = scan_cache_dir(hub_dir).size_on_disk
    deletion = delete_cached(hub_dir, REPO, dry_run=True)
    assert deletion.dry_run and deletion.freed_bytes > 0
    assert str(repo_folder(hub_dir, REPO)) in deletion.deleted_paths
    assert scan_cache_dir(hub_dir).size_on_disk == before
    assert REPO in cached_model_repos(hub_dir)


def test_delete_removes_the_whole_repo(hub):
    hub_dir, *_ = hub
    expected = {repo.repo_id: repo.size_bytes for repo in scan_repos(hub_dir)}[REPO]
    deletion = delete_cached(hub_dir, REPO)
    assert deletion.freed_bytes == expected
    assert cached_model_repos(hub_dir) == [OTHER]
    assert not repo_folder(hub_dir, REPO).exists()


def test_delete_one_revision_by_commit_keeps_the_other(hub):
    hub_dir, old, new, _ = hub
    deletion = delete_cached(hub_dir, REPO, old.revision)
    assert deletion.freed_bytes > 0
    (repo,) = [repo for repo in scan_repos(hub_dir) if repo.repo_id == REPO]
    assert [rev.commit for rev in repo.revisions] == [new.revision]


def test_delete_one_revision_by_ref(hub):
    hub_dir, old, new, _ = hub
    delete_cached(hub_dir, REPO, "main")
    (repo,) = [repo for repo in scan_repos(hub_dir) if repo.repo_id == REPO]
    assert [rev.commit for rev in repo.revisions] == [old.revision]


@pytest.mark.parametrize(("repo_id", "revision"), [("ocrd-test/absent", None), (REPO, "0" * 40)])
def test_unknown_repo_or_revision_is_a_lookup_error(hub, repo_id, revision):
    hub_dir, *_ = hub
    with pytest.raises(LookupError):
        delete_cached(hub_dir, repo_id, revision)


def test_delete_without_a_cache_is_a_lookup_error(tmp_path):
    with pytest.raises(LookupError, match="no Hugging Face cache"):
        delete_cached(tmp_path / "absent", REPO)


def test_a_commit_shared_by_two_repos_is_deleted_from_the_named_repo_only(hub):
    hub_dir, old, new, other = hub
    assert other.revision == old.revision
    delete_cached(hub_dir, OTHER)
    assert cached_model_repos(hub_dir) == [REPO]
    (repo,) = scan_repos(hub_dir)
    assert {rev.commit for rev in repo.revisions} == {old.revision, new.revision}

