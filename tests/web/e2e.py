#!/usr/bin/env python3
"""End-to-end test of the browser demo in headless Chromium.

Serves the built demo (examples/web/build.sh's output folder) on a free localhost port, opens
it with `?autotest=STEPS` in headless Chromium with WebGPU enabled, and reads the page's
console through the DevTools protocol (over a pipe, so nothing but the standard library is
needed). The page trains STEPS steps and logs `cenet-autotest: PASS ...` when the loss fell
or `cenet-autotest: FAIL ...`; any console error, uncaught exception or error-level browser
log entry also fails the test. Then it checks the weights the page's download button would
save (a safetensors file under PyTorch's keys, counters at the steps trained) and takes a
screenshot.

    tests/web/e2e.py DEMO_DIR [--steps 40] [--timeout 600] [--screenshot FILE]
                     [--weights FILE] [--chromium PATH] [--log FILE]

Exits 0 on success, 1 on failure or timeout, each with a one-line reason.
"""

import argparse
import base64
import fcntl
import functools
import http.server
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time

PREFIX = "cenet-autotest: "

# Chromium messages at error level that say nothing about the page.
IGNORED_ERRORS = ("favicon.ico",)


class DevTools:
    """The DevTools protocol over Chromium's --remote-debugging-pipe (fds 3 and 4)."""

    def __init__(self, to_browser, from_browser):
        self.to_browser = to_browser
        self.from_browser = from_browser
        self.buffer = b""
        self.next_id = 0
        self.events = []

    def send(self, method, params=None, session=None):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        return self.next_id

    def call(self, method, params=None, session=None, deadline=None):
        """Sends a command and waits for its answer; events meanwhile are kept."""
        wanted = self.send(method, params, session)
        while True:
            message = self.receive(deadline)
            if message is None:
                raise TimeoutError(f"no answer to {method}")
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def receive(self, deadline):
        """The next message, or None when `deadline` (time.monotonic) passes first."""
        while b"\0" not in self.buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.from_browser], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise EOFError("the browser closed the DevTools pipe (did it crash?)")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def next_event(self, deadline):
        if self.events:
            return self.events.pop(0)
        return self.receive(deadline)


def serve(folder):
    """Serves `folder` on a free localhost port in a background thread; returns the server."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def high_fd(fd):
    """The same pipe end on a descriptor above 10, so moving it to 3 or 4 clobbers nothing."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


def launch(chromium, profile, log):
    command_read, command_write = map(high_fd, os.pipe())
    answer_read, answer_write = map(high_fd, os.pipe())

    def child_fds():
        os.dup2(command_read, 3)
        os.dup2(answer_write, 4)

    flags = [
        "--headless=new",
        "--enable-unsafe-webgpu",
        "--no-sandbox",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--remote-debugging-pipe",
        "--window-size=1280,1400",
        "about:blank",
    ]
    browser = subprocess.Popen(
        [chromium, *flags],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        pass_fds=(3, 4),
        preexec_fn=child_fds,
    )
    os.close(command_read)
    os.close(answer_write)
    return browser, DevTools(command_write, answer_read)


def console_text(event):
    """The text of a Runtime.consoleAPICalled event."""
    parts = []
    for arg in event["params"].get("args", []):
        if "value" in arg:
            parts.append(str(arg["value"]))
        else:
            parts.append(arg.get("description", arg.get("type", "")))
    return " ".join(parts)


# The page's weights (a Uint8Array) as base64.
WEIGHTS_AS_BASE64 = """(() => {
  const bytes = window.cenetAutotestWeights;
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
})()"""


# What the page shows once it has trained: the adapter line, the warning a software adapter
# gets, the step counter, the test-image grid and the state of the controls.
PAGE_STATE = """(() => {
  const notice = document.getElementById("notice");
  const figures = Array.from(document.querySelectorAll("#grid figure"));
  return {
    adapter: document.getElementById("adapter").textContent,
    notice: notice.hidden ? "" : notice.textContent,
    step: document.getElementById("stat-step").textContent,
    grid: figures.map((f) => f.querySelector("figcaption").textContent),
    start: !document.getElementById("start").disabled,
    pause: !document.getElementById("pause").disabled,
    reset: !document.getElementById("reset").disabled,
    download: !document.getElementById("download").disabled,
  };
})()"""


def evaluate(tools, session, expression):
    """The value of a JavaScript expression in the page."""
    answer = tools.call(
        "Runtime.evaluate",
        {"expression": expression, "returnByValue": True},
        session=session,
        deadline=time.monotonic() + 60,
    )
    if "exceptionDetails" in answer:
        raise RuntimeError(f"evaluating {expression!r}: {answer['exceptionDetails']['text']}")
    return answer["result"].get("value")


def check_page(tools, session, args):
    """Checks what the page shows after its automatic run: SwiftShader is a software adapter,
    so the slow-training warning must be up; the step counter shows the steps trained; every
    test image has a prediction (✓ or ✗) and its true label; training has paused and Start,
    Reset and Download are enabled. Returns the problems found."""
    page = evaluate(tools, session, PAGE_STATE)
    problems = []
    if "software" not in page["adapter"] or "slow" not in page["notice"]:
        problems.append(
            f"page: no software-adapter warning (adapter line {page['adapter']!r}, "
            f"notice {page['notice']!r})"
        )
    if page["step"] != str(args.steps):
        problems.append(f"page: the step counter shows {page['step']!r}, expected {args.steps}")
    if not page["grid"] or not all(
        ("✓" in text or "✗" in text) and "true:" in text for text in page["grid"]
    ):
        problems.append(f"page: test images without a prediction and a label: {page['grid']}")
    buttons = {name: page[name] for name in ("start", "pause", "reset", "download")}
    if buttons != {"start": True, "pause": False, "reset": True, "download": True}:
        problems.append(f"page: after the run the buttons' enabled states are {buttons}")
    print(
        f"web e2e: page: {len(page['grid'])} test images with predictions, "
        f"step {page['step']}, warning shown",
        flush=True,
    )
    return problems


def wait_for(tools, session, expression, what, timeout):
    """Polls `expression` until it is true; returns the problems (one if it never was)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if evaluate(tools, session, expression):
            return []
        time.sleep(0.25)
    return [f"page: {what} did not happen within {timeout} s"]


def check_controls(tools, session, args):
    """Uses the controls as a person would after the automatic run: Start trains on from
    where it paused (the automatic mode pauses again after one step), and Reset builds a
    fresh network: step 0, no predictions, Start enabled and nothing to download. Returns
    the problems found, including any error the page raised meanwhile."""
    step = "Number(document.getElementById('stat-step').textContent)"
    button = "document.getElementById('{}')"
    problems = []
    evaluate(tools, session, button.format("start") + ".click()")
    problems += wait_for(
        tools, session,
        f"{step} === {args.steps + 1} && !{button.format('start')}.disabled",
        f"Start: a step past {args.steps}, then a pause", 120,
    )
    evaluate(tools, session, button.format("reset") + ".click()")
    problems += wait_for(
        tools, session,
        f"{step} === 0 && !{button.format('start')}.disabled"
        f" && {button.format('download')}.disabled"
        " && Array.from(document.querySelectorAll('#grid .predicted'))"
        ".every((p) => p.textContent === '?')",
        "Reset: a fresh network at step 0 with no predictions", 120,
    )
    for event in tools.events:
        method = event.get("method")
        params = event.get("params", {})
        if method == "Runtime.exceptionThrown":
            problems.append(f"uncaught exception after the run: {params['exceptionDetails']}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            problems.append(f"console error after the run: {console_text(event)}")
    if not problems:
        print("web e2e: controls: Start trained on and paused, Reset gave step 0", flush=True)
    return problems


def check_weights(tools, session, args):
    """Fetches the weights the download button saves and checks them as a safetensors file
    of the trained network: PyTorch's keys, and every batch norm's num_batches_tracked equal
    to the steps trained. Returns the problems found."""
    data = base64.b64decode(evaluate(tools, session, WEIGHTS_AS_BASE64))
    if args.weights:
        with open(args.weights, "wb") as out:
            out.write(data)
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    body = data[8 + header_len:]
    problems = []
    if header.get("fc.weight", {}).get("shape") != [10, 64]:
        problems.append(f"weights: fc.weight is {header.get('fc.weight')}, expected F32 [10, 64]")
    counters = {k: v for k, v in header.items() if k.endswith(".num_batches_tracked")}
    for name, info in counters.items():
        start, end = info["data_offsets"]
        value = int.from_bytes(body[start:end], "little", signed=True)
        if info["dtype"] != "I64" or info["shape"] != [] or value != args.steps:
            problems.append(f"weights: {name} is {info} = {value}, expected I64 [] = {args.steps}")
    if not counters:
        problems.append("weights: no num_batches_tracked counters")
    print(
        f"web e2e: weights: {len(header) - ('__metadata__' in header)} tensors in {len(data)} bytes, "
        f"{len(counters)} batch norms at {args.steps} steps",
        flush=True,
    )
    return problems


def run(args):
    log_file = open(args.log, "w") if args.log else subprocess.DEVNULL
    server = serve(args.demo)
    url = f"http://127.0.0.1:{server.server_address[1]}/index.html?autotest={args.steps}"
    profile = tempfile.mkdtemp(prefix="cenet-e2e-chromium-")
    browser, tools = launch(args.chromium, profile, log_file)
    started = time.monotonic()
    deadline = started + args.timeout
    errors = []
    verdict = None
    last_line = "(none)"
    try:
        targets = tools.call("Target.getTargets", deadline=deadline)["targetInfos"]
        page = next(t["targetId"] for t in targets if t["type"] == "page")
        session = tools.call(
            "Target.attachToTarget", {"targetId": page, "flatten": True}, deadline=deadline
        )["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Inspector"):
            tools.call(f"{domain}.enable", session=session, deadline=deadline)
        tools.call("Page.navigate", {"url": url}, session=session, deadline=deadline)
        print(f"web e2e: opened {url}", flush=True)

        while verdict is None:
            event = tools.next_event(deadline)
            if event is None:
                raise TimeoutError
            method = event.get("method")
            params = event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = console_text(event)
                if params.get("type") in ("error", "assert"):
                    errors.append(f"console error: {text}")
                if text.startswith(PREFIX):
                    line = text[len(PREFIX):]
                    last_line = line
                    print(f"web e2e: [{time.monotonic() - started:5.0f} s] {line}", flush=True)
                    if line.startswith("PASS") or line.startswith("FAIL"):
                        verdict = line
                else:
                    print(f"web e2e: page: {text}", flush=True)
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                description = details.get("exception", {}).get("description", details["text"])
                errors.append(f"uncaught exception: {description}")
            elif method == "Log.entryAdded":
                entry = params["entry"]
                if entry["level"] == "error" and not any(
                    ignored in entry.get("url", "") + entry["text"] for ignored in IGNORED_ERRORS
                ):
                    errors.append(f"browser {entry['source']} error: {entry['text']}")
            elif method == "Inspector.targetCrashed":
                errors.append("the page crashed")
                break
            if errors and verdict is None:
                # Let the page log its verdict, which usually says more.
                deadline = min(deadline, time.monotonic() + 5)

        if verdict.startswith("PASS"):
            errors += check_page(tools, session, args)
            errors += check_weights(tools, session, args)

        if args.screenshot:
            shot = tools.call(
                "Page.captureScreenshot", {"format": "png"}, session=session,
                deadline=time.monotonic() + 60,
            )
            with open(args.screenshot, "wb") as out:
                out.write(base64.b64decode(shot["data"]))
            print(f"web e2e: screenshot in {args.screenshot}", flush=True)

        if verdict.startswith("PASS"):
            # Last, since Reset clears what the checks above and the screenshot look at.
            errors += check_controls(tools, session, args)
    except TimeoutError:
        if errors:
            verdict = verdict or "FAIL (no verdict after the errors below)"
        else:
            print(
                f"web e2e: FAILED: timed out after {args.timeout} s waiting for the page's "
                f"verdict; last progress line: {last_line}",
                flush=True,
            )
            return 1
    except (EOFError, RuntimeError, StopIteration) as e:
        print(f"web e2e: FAILED: {e!r}", flush=True)
        return 1
    finally:
        try:
            tools.send("Browser.close")
            browser.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            browser.kill()
            browser.wait()
        server.shutdown()
        shutil.rmtree(profile, ignore_errors=True)

    elapsed = time.monotonic() - started
    verdict = verdict or "the page gave no verdict"
    for error in errors:
        print(f"web e2e: {error}", flush=True)
    if verdict.startswith("PASS") and not errors:
        print(f"web e2e: passed in {elapsed:.0f} s: {verdict}", flush=True)
        return 0
    print(f"web e2e: FAILED in {elapsed:.0f} s: {verdict}", flush=True)
    return 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demo", help="the folder examples/web/build.sh built")
    parser.add_argument("--steps", type=int, default=40, help="training steps")
    parser.add_argument("--timeout", type=float, default=600, help="seconds in all")
    parser.add_argument("--screenshot", help="PNG file for a screenshot at the end")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--log", help="file for Chromium's own output")
    parser.add_argument("--weights", help="file for the trained weights (safetensors)")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.demo, "pkg", "web_bg.wasm")):
        print(f"web e2e: FAILED: {args.demo} holds no built demo (pkg/web_bg.wasm)")
        return 1
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
