"""The figure of docs/integrations/pacs.md: the viewer that MONAI Label serves (its bundled OHIF at ``/ohif/``) on a
synthetic SMWI study held by Orthanc, with the patch boxes of ``/infer/nigral_sbr`` as an overlay, captured with
headless Chromium (Debian's ``chromium``) driven over the DevTools protocol (aiohttp's websocket). Research use only.

Starts a throw-away Orthanc with the project's configuration (authentication on, loopback only), sends one
wide-field synthetic SMWI study, starts MONAI Label with Orthanc as its DICOMweb datastore (``--studies
http://127.0.0.1:PORT/dicom-web``, credentials in ``MONAI_LABEL_DICOMWEB_USERNAME`` / ``..._PASSWORD``; the browser
talks only to MONAI Label, whose ``/proxy/dicom/...`` routes forward to Orthanc), runs ``/infer/nigral_sbr`` on the
series with two clicks (the SBRs are printed), stores the patch-box label back into the study as a DICOM-SEG whose
series description carries the SBRs, then opens the study in OHIF (``/ohif/viewer?StudyInstanceUIDs=...``), loads
the SEG (thumbnail, "open this Segmentation? Yes", a segment of the segment list) and writes the screenshot. Failed
requests, HTTP errors and console errors of the page are printed; the script exits nonzero with a one-line reason
when the viewer draws no image or does not load the segmentation.

OHIF's MONAI Label panel (``--mode monai-label``) lists only models of type segmentation, deepgrow, deepedit or
vista3d; ``nigral_sbr`` is a classification-type task (MONAI Label has no regression type), so the panel does not
offer it. That mode's MPR (volume) viewports do not load the SEG either: OHIF's error boundary reports "TypeError:
Cannot read properties of undefined (reading 'volumeId') at VolumeViewport.setVolumes", then "Incompatible view
refs" (printed by this script with ``--mode monai-label``, which then exits 1). Usage (repository root)::

    python scripts/label_viewer_screenshot.py [--out docs/figures/ohif_sbr.png] [--mode viewer|monai-label]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from subjects import same_study, study_attributes, write_dicom_series  # noqa: E402  (the test suite's DICOM series writer)

from apps.pacs.client import OrthancClient  # noqa: E402
from apps.pacs.orthanc import free_port, start_orthanc, stop_process_group, write_config  # noqa: E402
from bundle.synthetic import smwi_cohort  # noqa: E402

ATTRIBUTES = study_attributes("SYNTHETIC^DEMO", "SYN-0002", "A2")
USER, PASSWORD = "viewer", "synthetic-only-secret"
SEG_TITLE = "nigral patches"


def wait_http(url: str, process: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s * 4) + 1):  # bounded in count and time
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.25)
    return False


def two_click_overlay(label_url: str, series_uid: str, subject, tmp: Path, files: list[Path]) -> Path:
    """``/infer/nigral_sbr`` on the Orthanc-held series with two clicks (the nigrosome centres, as voxel indices of
    the volume MONAI Label made of the series, as OHIF's panel sends them); prints the SBRs and returns the patch-box
    label as a DICOM-SEG of the series (MONAI Label's own converter with pydicom-seg: its ``output=dicom_seg``
    needs dcmqi's ``itkimage2segimage``, which is not installed)."""
    import nibabel as nib

    from apps.label.server import install_pydicom_alias

    install_pydicom_alias()
    from monailabel.datastore.utils.convert import nifti_to_dicom_seg

    def infer(clicks: dict, output: str) -> requests.Response:
        answer = requests.post(f"{label_url}/infer/nigral_sbr", params={"image": series_uid, "output": output},
                               data={"params": json.dumps(clicks)}, timeout=600)  # fmt: skip
        if answer.status_code != 200:
            raise RuntimeError(f"/infer answered HTTP {answer.status_code}: {answer.text[:300]}")
        return answer

    infer({}, "json")  # the shipped localiser; MONAI Label fetches the series from Orthanc and converts it
    (converted,) = (tmp / "cache").rglob("*.nii.gz")
    to_voxel = np.linalg.inv(nib.load(converted).affine)
    worlds = {side: subject.affine @ [*getattr(subject, f"centroid_{side}"), 1.0] for side in ("right", "left")}
    clicks = {"foreground": [[int(round(v)) for v in (to_voxel @ worlds[side])[:3]] for side in ("left", "right")]}
    result = infer(clicks, "json").json()
    print("two clicks:", clicks["foreground"], "->", {side: {k: result[side][k] for k in ("sbr", "interval")}
                                                        for side in ("right", "left")})  # fmt: skip
    label = tmp / "patches.nii.gz"
    label.write_bytes(infer(clicks, "image").content)
    values = sorted(int(v) for v in np.unique(np.asarray(nib.load(label).dataobj)) if v)
    names = {1: "right nigral patch", 2: "left nigral patch", 3: "both nigral patches"}
    sides = {1: ("24028007", "Right"), 2: ("7771000", "Left"), 3: ("51440002", "Right and left")}
    colours = {1: (230, 80, 60), 2: (60, 160, 230), 3: (240, 200, 60)}
    title = (f"{SEG_TITLE} - SBR R {result['right']['sbr']:.2f} L {result['left']['sbr']:.2f} "
             "(research use only)")  # fmt: skip
    info = []
    for v in values:  # MONAI Label's default segment codes would call every segment SCT 78961009 (spleen)
        attribute = {"labelID": v, "SegmentLabel": names[v], "SegmentAlgorithmType": "SEMIAUTOMATIC",
                     "SegmentAlgorithmName": "nigral_sbr", "recommendedDisplayRGBValue": list(colours[v]),
                     "SegmentDescription": "the model's input patch box around the nigrosome-1 (not a segmentation)",
                     "SegmentedPropertyCategoryCodeSequence": {"CodeValue": "91723000", "CodingSchemeDesignator":
                                                               "SCT", "CodeMeaning": "Anatomical Structure"},
                     "SegmentedPropertyTypeCodeSequence": {"CodeValue": "70007007", "CodingSchemeDesignator": "SCT",
                                                           "CodeMeaning": "Substantia nigra"},
                     "SegmentedPropertyTypeModifierCodeSequence": {"CodeValue": sides[v][0],
                                                                   "CodingSchemeDesignator": "SCT",
                                                                   "CodeMeaning": sides[v][1]}}  # fmt: skip
        info.append({"name": names[v], "model_name": title, "segmentAttribute": attribute})
    seg = nifti_to_dicom_seg(str(files[0].parent), str(label), info, file_ext="*.dcm", use_itk=False)
    if not seg:
        raise RuntimeError("the patch-box label is empty: no DICOM-SEG written")
    # the converter's writer gives the SEG a new frame of reference, MONAI Label's template fills in clinical-trial
    # and reader names and the side modifier lands beside the type code: the SEG takes its series' frame of
    # reference, names none of those, and nests the modifier (dciodvfy: no errors, no warnings)
    import pydicom

    source, ds = pydicom.dcmread(files[0], stop_before_pixels=True), pydicom.dcmread(seg)
    ds.FrameOfReferenceUID = source.FrameOfReferenceUID
    ds.PositionReferenceIndicator = source.get("PositionReferenceIndicator", "")
    ds.ContentCreatorName = ""
    ds.ContentDescription = "nigral_sbr patch boxes of two clicks - research use only"
    for keyword in ("ClinicalTrialSeriesID", "ClinicalTrialTimePointID", "ClinicalTrialCoordinatingCenterName"):
        if keyword in ds:
            delattr(ds, keyword)
    for segment in ds.SegmentSequence:  # the side modifies the property type: DICOM nests it in the type's code item
        if "SegmentedPropertyTypeModifierCodeSequence" in segment:
            modifier = list(segment.SegmentedPropertyTypeModifierCodeSequence)
            del segment.SegmentedPropertyTypeModifierCodeSequence
            segment.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = modifier
    ds.save_as(seg)
    return Path(seg)


class Page:
    """A minimal DevTools-protocol client (aiohttp's websocket) of one page target; records failed requests,
    HTTP errors, console errors and uncaught exceptions."""

    def __init__(self, ws) -> None:
        self.ws, self.next_id, self.pending = ws, 0, {}
        self.failed: list[str] = []
        self.http_errors: list[str] = []
        self.console: list[str] = []
        self.requests: dict[str, str] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Network.requestWillBeSent":
                self.requests[params["requestId"]] = params["request"]["url"]
            elif method == "Network.loadingFailed":
                url = self.requests.get(params["requestId"], "?")
                self.failed.append(f"{url[:160]} -> {params.get('errorText')}")
            elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
                self.http_errors.append(f"{params['response']['url'][:160]} -> HTTP {params['response']['status']}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "debug"):
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                if params["type"] != "debug" or "Error Boundary" in text:  # OHIF reports caught errors as debug
                    self.console.append(f"console.{params['type']}: {text[:1500]}")
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description", details.get("text", ""))
                self.console.append(f"exception: {text.splitlines()[0][:300] if text else '?'}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                self.console.append(f"log: {params['entry']['text'][:300]} {params['entry'].get('url', '')[:120]}")

    async def send(self, method: str, timeout_s: float = 60, **params) -> dict:
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method, "params": params}))
        answer = await asyncio.wait_for(future, timeout_s)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    async def evaluate(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def click(self, text: str, double: bool = False, exact: bool = True) -> bool:
        """Click (the centre of) the innermost visible element whose text is ``text`` (or the last one that the CSS
        selector after ``css:`` selects), as a mouse would; False when there is none."""
        where = await self.evaluate(
            "(() => { const want = " + json.dumps(text) + "; const exact = " + json.dumps(exact) + ";"
            " const css = want.startsWith('css:');"
            " const all = document.querySelectorAll(css ? want.slice(4) : 'body *');"
            " const hits = [...all].filter(e => { const t = (e.innerText || '').trim();"
            " const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0 &&"
            " (css || (exact ? t === want : t.includes(want))); });"
            " const e = hits[hits.length - 1]; if (!e) return null; const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        if not where:
            return False
        x, y = where
        await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for count in (1, 2) if double else (1,):
            for kind in ("mousePressed", "mouseReleased"):
                await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=count)
        return True


def write_png(data: bytes, out: Path) -> None:
    """The screenshot as a 256-colour PNG (the noisy synthetic slice makes a full-colour PNG about 600 KB)."""
    try:
        from PIL import Image
    except ImportError:
        out.write_bytes(data)
        return
    import io

    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(out, optimize=True)


async def capture(
    devtools_port: int,
    url: str,
    out: Path,
    width: int,
    height: int,
    wait_s: float,
    cookie: dict,
    steps: list,
    debug: Path | None,
) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        targets = []
        for _ in range(80):  # bounded: Chromium opens its DevTools endpoint within seconds
            try:
                async with session.get(f"http://127.0.0.1:{devtools_port}/json/list") as answer:
                    targets = [t for t in await answer.json() if t.get("type") == "page"]
                if targets:
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.25)
        if not targets:
            raise RuntimeError("Chromium's DevTools endpoint did not answer")
        async with session.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = Page(ws)
            for domain in ("Page", "Network", "Runtime", "Log"):
                await page.send(f"{domain}.enable")
            await page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                            mobile=False)  # fmt: skip
            await page.send("Network.setCookie", **cookie)  # the panel's server (default: port 8000 of the host)
            await page.send("Page.navigate", url=url)
            deadline = time.monotonic() + wait_s
            state = {}
            for _ in range(int(wait_s) + 1):  # bounded in count and time: until the viewport has drawn the series
                await asyncio.sleep(1)
                state = (
                    await page.evaluate(
                        "(() => { const c = [...document.querySelectorAll('canvas')].filter(c => c.width > 100);"
                        " const t = document.body ? document.body.innerText : '';"
                        " return {canvases: c.length, text: t.slice(0, 2000), href: location.href}; })()"
                    )
                    or {}
                )
                if (state.get("canvases") and "SMWI" in state.get("text", "")) or time.monotonic() > deadline:
                    break
            await asyncio.sleep(min(5.0, max(0.0, deadline - time.monotonic())))  # let the slices finish loading
            page.steps = []
            for text, double, exact in steps:
                done = await page.click(text, double=double, exact=exact)
                page.steps.append(f"click {text!r}: {'done' if done else 'not found'}")
                await asyncio.sleep(4)
                if debug:
                    shot = await page.send("Page.captureScreenshot", format="png")
                    (debug / f"step{len(page.steps)}.png").write_bytes(base64.b64decode(shot["data"]))
            shot = await page.send("Page.captureScreenshot", format="png")
            write_png(base64.b64decode(shot["data"]), out)
            state["text"] = await page.evaluate("document.body.innerText.slice(0, 3000)")
            state["data-cy"] = await page.evaluate("[...document.querySelectorAll('[data-cy]')].map(e => e.dataset.cy)")
            page.reader.cancel()
            return {"steps": page.steps, "state": state, "failed": page.failed, "http_errors": page.http_errors,
                    "console": page.console}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "figures" / "ohif_sbr.png"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--wait_s", type=float, default=90, help="at most this long for the viewer to draw")
    parser.add_argument("--mc_samples", default="20")
    parser.add_argument(
        "--mode",
        default="viewer",
        choices=["monai-label", "viewer"],
        help="OHIF's mode: MONAI Label's (three MPR viewports and its panel) or the basic viewer",
    )
    parser.add_argument("--debug", help="a folder for a screenshot after each click")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        parser.error("no chromium: apt-get install chromium")
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        parser.error("no aiohttp (the DevTools websocket client): pip install aiohttp")
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        orthanc_port, label_port, devtools_port = free_port(), free_port(), free_port()
        config = write_config(tmp / "orthanc", orthanc_port, USER, PASSWORD, stable_age_s=2)
        try:
            processes.append(start_orthanc(config, tmp / "orthanc.log"))
            client = OrthancClient(f"http://127.0.0.1:{orthanc_port}", (USER, PASSWORD))
            if not client.wait_ready():
                raise RuntimeError(f"Orthanc did not start: {(tmp / 'orthanc.log').read_text()[-2000:]}")
            subject = smwi_cohort.simulate_subject(4.2, 2.1, np.random.default_rng(21), smwi_cohort.WIDE_FIELD)
            folder = write_dicom_series(tmp / "smwi", subject.volume, subject.affine, seed=21,
                                        attributes={**ATTRIBUTES, "SeriesDescription": "SMWI axial",
                                                    "SeriesNumber": 5})  # fmt: skip
            files = sorted(folder.glob("*.dcm"))
            study_uid = same_study(files)
            for path in files:
                client.store(path)
            import pydicom

            series_uid = pydicom.dcmread(files[0]).SeriesInstanceUID
            app = tmp / "app"
            shutil.copytree(REPO / "apps" / "label", app, ignore=shutil.ignore_patterns("__pycache__"))
            env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MONAI_LABEL_DICOMWEB_USERNAME=USER,
                       MONAI_LABEL_DICOMWEB_PASSWORD=PASSWORD,
                       MONAI_LABEL_DICOMWEB_CACHE_PATH=str(tmp / "cache"))  # fmt: skip
            with open(tmp / "label.log", "wb") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "apps.label", "start_server", "--app", str(app), "--studies",
                     f"{client.url}/dicom-web", "--host", "127.0.0.1", "--port", str(label_port),
                     "--conf", "mc_samples", args.mc_samples],
                    cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))  # fmt: skip
            label_url = f"http://127.0.0.1:{label_port}"
            if not wait_http(f"{label_url}/info/", processes[-1], 180):
                raise RuntimeError(f"MONAI Label did not start: {(tmp / 'label.log').read_text()[-2000:]}")
            models = requests.get(f"{label_url}/info/", timeout=30).json()["models"]
            print("models:", {name: model.get("type") for name, model in models.items()})
            overlay = two_click_overlay(label_url, series_uid, subject, tmp, files)
            client.store(overlay)
            with open(tmp / "chromium.log", "wb") as log:
                processes.append(subprocess.Popen(
                    [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     "--no-first-run", "--no-default-browser-check", f"--user-data-dir={tmp / 'profile'}",
                     f"--window-size={args.width},{args.height}", "--remote-debugging-address=127.0.0.1",
                     f"--remote-debugging-port={devtools_port}", "about:blank"],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True))  # fmt: skip
            url = f"{label_url}/ohif/{args.mode}?StudyInstanceUIDs={study_uid}"
            cookie = {"name": "MONAILABEL_SERVER_URL", "value": f"{label_url}/", "url": label_url}
            # the notice, the SEG thumbnail (double click: into the active viewport), "open this Segmentation?" (the
            # first click may only activate the viewport), then the segment list (a segment: its slice)
            steps = [
                ("Confirm and Hide", False, True),
                (SEG_TITLE, True, False),
                ("Yes", False, True),
                ("Yes", False, True),
            ]
            if args.mode == "viewer":
                steps += [('css:[data-cy="panelSegmentation-btn"]', False, True), ("right nigral patch", False, True)]
            debug = Path(args.debug) if args.debug else None
            report = asyncio.run(capture(devtools_port, url, Path(args.out), args.width, args.height, args.wait_s,
                                         cookie, steps, debug))  # fmt: skip
            for key in ("steps", "failed", "http_errors", "console"):
                print(f"{key}:", *report[key] or ["none"], sep="\n  ")
            print("page:", report["state"].get("href"), "canvases:", report["state"].get("canvases"))
            if debug:
                print("data-cy:", report["state"].get("data-cy"))
            print("page text:", report["state"].get("text", "")[:800].replace("\n", " | "))
            if not report["state"].get("canvases"):
                print(
                    f"the viewer drew no image (screenshot at {args.out}); see the requests and errors above",
                    file=sys.stderr,
                )
                return 1
            if "right nigral patch" not in report["state"].get("text", "") or "wrong" in report["state"]["text"]:
                caught = [line for line in report["console"] if "Error Boundary" in line]  # OHIF's caught errors
                reason = caught[0].splitlines()[0].split("Error Boundary ", 1)[-1] if caught else "see above"
                print(f"the viewer did not load the patch-box segmentation (screenshot at {args.out}): {reason}",
                      file=sys.stderr)  # fmt: skip
                return 1
        except (RuntimeError, TimeoutError, requests.RequestException) as err:
            # the details (a log's tail), then one line
            lines = str(err).splitlines() or [type(err).__name__]
            print(*lines[1:], f"stopped: {lines[0]}", sep="\n", file=sys.stderr)
            return 1
        finally:
            for process in reversed(processes):
                stop_process_group(process)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
