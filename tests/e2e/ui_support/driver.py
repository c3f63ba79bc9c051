#!/usr/bin/env python3
"""Drives the Flow UI in Debian's headless Chromium with Playwright (e2e_ui).

    driver.py quickstart JSON   the quickstart map, a denied connection, hints, filters
    driver.py scale JSON        frame time, memory and flow-to-screen latency under load

JSON holds the parameters (see each mode). Progress goes to stderr; the last line
on stdout is the JSON result the Rust test checks.
"""

import json
import statistics
import subprocess
import sys
import time

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


def log(*args):
    print("driver:", *args, file=sys.stderr, flush=True)


def browser(p):
    return p.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=["--no-sandbox", "--enable-precise-memory-info", "--disable-gpu"],
    )


def open_namespace(page, url, namespace, timeout_ms):
    page.goto(url)
    # The namespace list comes from GetNamespaces; the page asks again every 5 s.
    page.wait_for_selector(f'#namespace option[value="{namespace}"]', state="attached", timeout=timeout_ms)
    page.select_option("#namespace", namespace)


def edge_js(edge_id):
    return json.dumps(edge_id)


def table_rows(page):
    return page.eval_on_selector_all(
        "#flows tbody tr",
        "rows => rows.map(r => ({cls: r.className, cells: [...r.children].map(c => c.textContent)}))",
    )


def quickstart(params):
    out = params["out"]
    result = {"screenshots": []}
    with sync_playwright() as p:
        b = browser(p)
        page = b.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: log("console:", m.text))
        open_namespace(page, params["url"], params["namespace"], 30_000)
        log("namespace selected")
        for node in params["nodes"]:
            page.wait_for_selector(f'g.node[data-id="{node}"]', timeout=20_000)
        for edge, verdict in params["edges"].items():
            page.wait_for_function(
                f"(() => {{ const e = window.porinUi.edges.get({edge_js(edge)}); return e && e.verdict === {json.dumps(verdict)}; }})()",
                timeout=20_000,
            )
        log("expected nodes and edges drawn")
        result["nodes"] = page.evaluate("[...window.porinUi.nodes.keys()]")
        result["edges"] = page.evaluate("Object.fromEntries([...window.porinUi.edges.values()].map(e => [e.id, e.verdict]))")

        dropped = params["dropped_edge"]
        started = time.time() * 1000
        deny = subprocess.run(params["deny"], capture_output=True, timeout=20)
        log("denied connection exited with", deny.returncode)
        result["deny_exit"] = deny.returncode
        page.wait_for_function(
            f"(() => {{ const e = window.porinUi.edges.get({edge_js(dropped)}); return e && e.dropped > 0; }})()",
            timeout=20_000,
        )
        edge = page.evaluate(f"window.porinUi.edges.get({edge_js(dropped)})")
        seen = page.evaluate(f"window.porinUi.edgeSeenAt[{edge_js(dropped)}]")
        result["dropped_edge"] = edge
        result["datapath_to_screen_ms"] = seen - edge["first_ms"]
        result["command_to_screen_ms"] = seen - started
        log("dropped edge on screen", result["datapath_to_screen_ms"], "ms after the drop")
        page.wait_for_timeout(600)
        shot = f"{out}/quickstart-map.png"
        page.screenshot(path=shot, full_page=True)
        result["screenshots"].append(shot)

        # Policy hint of the dropped edge, and the table filtered to it.
        page.dispatch_event(f'g.edge[data-id="{dropped}"]', "click")
        page.wait_for_selector("#policy-hint .policy", timeout=10_000)
        result["hint"] = page.inner_text("#policy-hint .policy")
        result["edge_rows"] = table_rows(page)
        shot = f"{out}/quickstart-dropped-edge.png"
        page.screenshot(path=shot, full_page=True)
        result["screenshots"].append(shot)

        # A node filters to its flows.
        page.click("#clear")
        node = params["click_node"]
        page.dispatch_event(f'g.node[data-id="{node}"]', "click")
        result["node_rows"] = table_rows(page)
        page.click("#clear")

        # Verdict filter.
        page.select_option("#verdict", "DROPPED")
        result["dropped_rows"] = table_rows(page)
        page.select_option("#verdict", "all")
        result["all_rows"] = len(table_rows(page))

        # Pause: nothing changes on screen while paused; resume applies what came.
        page.click("#pause")
        before = page.evaluate("window.porinUi.rows.length")
        subprocess.run(params["traffic"], capture_output=True, timeout=20)
        page.wait_for_timeout(2_500)
        during = page.evaluate("window.porinUi.rows.length")
        pending = page.evaluate("window.porinUi.pendingRows.length")
        page.click("#pause")
        after = page.evaluate("window.porinUi.rows.length")
        result["pause"] = {"before": before, "during": during, "pending": pending, "after": after}
        b.close()
    print(json.dumps(result))


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def scale(params):
    out = params["out"]
    seconds = params["seconds"]
    with sync_playwright() as p:
        b = browser(p)
        page = b.new_page(viewport={"width": 1400, "height": 900})
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        open_namespace(page, params["url"], params["namespace"], 30_000)
        page.wait_for_function(f"window.porinUi.nodes.size >= {params['workloads']}", timeout=30_000)
        log("all workloads drawn; measuring for", seconds, "s")
        page.evaluate(
            """() => {
            window.__frames = []; window.__longTasks = 0;
            let last = performance.now();
            const step = (t) => { window.__frames.push(t - last); last = t; requestAnimationFrame(step); };
            requestAnimationFrame(step);
            new PerformanceObserver((l) => { window.__longTasks += l.getEntries().length; })
              .observe({entryTypes: ['longtask']});
            window.porinUi.latencies = [];
            window.porinUi.renderMs = [];
        }"""
        )
        page.wait_for_timeout(seconds * 1000)
        frames = page.evaluate("window.__frames.slice(1)")
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        ui = page.evaluate(
            """() => ({
            nodes: window.porinUi.nodes.size, edges: window.porinUi.edges.size,
            flows: window.porinUi.flowsSeen, rows: window.porinUi.rows.length,
            latencies: window.porinUi.latencies.map(l => l.ms),
            renderMs: window.porinUi.renderMs,
            heap: performance.memory ? performance.memory.usedJSHeapSize : null,
            longTasks: window.__longTasks,
        })"""
        )
        shot = f"{out}/scale-map.png"
        page.screenshot(path=shot)
        b.close()
    result = {
        "nodes": ui["nodes"],
        "edges": ui["edges"],
        "flows_aggregated": ui["flows"],
        "frames": len(frames),
        "frame_ms_p50": round(statistics.median(frames), 1) if frames else None,
        "frame_ms_p95": round(percentile(frames, 0.95), 1) if frames else None,
        "frame_ms_max": round(max(frames), 1) if frames else None,
        "long_tasks": ui["longTasks"],
        "map_update_ms_p50": round(statistics.median(ui["renderMs"]), 2) if ui["renderMs"] else None,
        "map_update_ms_max": round(max(ui["renderMs"]), 2) if ui["renderMs"] else None,
        "map_updates": len(ui["renderMs"]),
        "js_heap_mb": round(metrics.get("JSHeapUsedSize", 0) / 1e6, 1),
        "performance_memory_mb": round(ui["heap"] / 1e6, 1) if ui["heap"] else None,
        "dom_nodes": int(metrics.get("Nodes", 0)),
        "new_edges": len(ui["latencies"]),
        "flow_to_screen_ms_p50": statistics.median(ui["latencies"]) if ui["latencies"] else None,
        "flow_to_screen_ms_max": max(ui["latencies"]) if ui["latencies"] else None,
        "screenshot": shot,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    mode, params = sys.argv[1], json.loads(sys.argv[2])
    {"quickstart": quickstart, "scale": scale}[mode](params)
