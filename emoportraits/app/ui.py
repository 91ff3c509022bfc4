"""The Blocks layout of the app and its entry point (``python app.py``, see ``main``).

All three tabs share one queue slot (``concurrency_id="gpu"``, limit 1): one request renders at a
time, so a single GPU is never oversubscribed; the rest wait in the queue with their position shown.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import gradio as gr

from ..errors import EmoPortraitsError
from .examples import make_examples
from .handlers import POSE_DRIVER, POSE_GENERATED, POSE_STILL, Handlers, user_errors
from .loading import AppModels, Limits, load_models

TITLE = "EMOPortraits: one-shot head avatars driven by video, speech and generated head poses"


class PhotoInput(gr.Image):
    """``gr.Image`` that hands over the uploaded file untouched: gr.Image would decode it first and
    fail on a broken file with a generic error, while ``load_image`` names the file and the problem
    (and applies EXIF orientation). The browser side is the ordinary Image component."""
    is_template = True

    def preprocess(self, payload):
        return None if payload is None else payload.path


def gpu(duration: int = 120):
    """``spaces.GPU`` on a ZeroGPU Space (a GPU is attached per call); a no-op everywhere else."""
    try:
        import spaces
    except ImportError:
        return lambda func: func
    return spaces.GPU(duration=duration)


def _wrap(func):
    return user_errors(gpu()(func))


def _notice(models: AppModels, *parts: str):
    reason = models.why_not(*parts)
    return gr.Markdown(f"⚠️ {reason}" if reason else "", visible=bool(reason))


def _reenact_tab(h: Handlers, ex, limits: Limits) -> None:
    with gr.Row():
        with gr.Column():
            source = PhotoInput(type="filepath", label="Portrait photo", elem_id="reenact-source")
            driver_video = gr.Video(label="Driving video (upload or record with the webcam)",
                                    sources=["upload", "webcam"], elem_id="reenact-driver-video")
            driver_image = PhotoInput(type="filepath", label="… or a driving image", elem_id="reenact-driver-image")
            with gr.Accordion("Options", open=False):
                mode = gr.Radio(["relative", "absolute"], value="relative", label="Motion",
                                info="relative: the driver's motion since its first frame, applied to the "
                                     "portrait's pose; absolute: the driver's pose and expression as they are")
                paste_back = gr.Checkbox(True, label="Paste the head back into the photo")
                expression = gr.Slider(0, 2, value=1, step=0.05, label="Expression strength")
                smooth = gr.Slider(0, 0.95, value=0.5, step=0.05, label="Smoothing (crop box and head pose)")
                longest = max(limits.max_video_seconds, 0.2)
                max_seconds = gr.Slider(0.1, longest, value=longest, step=0.1,
                                        label="Max length (seconds of the driving video)")
            run = gr.Button("Animate", variant="primary", elem_id="reenact-run")
        with gr.Column():
            video = gr.Video(label="Result", interactive=False, elem_id="reenact-result-video")
            image = gr.Image(label="Result (driving image)", interactive=False, elem_id="reenact-result-image")
            status = gr.Markdown(label="Status", elem_id="reenact-status")
    gr.Examples([[str(ex.portrait), str(ex.driver_video), None], [str(ex.portrait), None, str(ex.driver_image)]],
                inputs=[source, driver_video, driver_image], cache_examples=False, elem_id="reenact-examples")
    run.click(_wrap(h.reenact), [source, driver_video, driver_image, mode, paste_back, expression, smooth,
                                 max_seconds], [video, image, status], api_name="reenact", concurrency_id="gpu")


def _speech_tab(h: Handlers, ex, models: AppModels) -> None:
    _notice(models, "speech", "whisper")
    with gr.Row():
        with gr.Column():
            source = PhotoInput(type="filepath", label="Portrait photo", elem_id="speak-source")
            audio = gr.Audio(type="filepath", sources=["upload", "microphone"], label="Speech",
                             elem_id="speak-audio")
            pose_mode = gr.Radio([POSE_STILL, POSE_DRIVER, POSE_GENERATED], value=POSE_STILL, label="Head pose",
                                 info=models.why_not("pose") and f"generated: {models.why_not('pose')}")
            pose_video = gr.Video(label="Head motion from this video", sources=["upload", "webcam"],
                                  visible=False, elem_id="speak-pose-video")
            run = gr.Button("Speak", variant="primary", elem_id="speak-run")
        with gr.Column():
            video = gr.Video(label="Talking portrait", interactive=False, elem_id="speak-result-video")
            status = gr.Markdown(label="Status", elem_id="speak-status")
    gr.Examples([[str(ex.portrait), str(ex.speech), POSE_STILL, None],
                 [str(ex.portrait), str(ex.speech), POSE_DRIVER, str(ex.driver_video)],
                 [str(ex.portrait), str(ex.speech), POSE_GENERATED, None]],
                inputs=[source, audio, pose_mode, pose_video], cache_examples=False, elem_id="speak-examples")
    pose_mode.change(lambda m: gr.update(visible=m == POSE_DRIVER), pose_mode, pose_video,
                     api_name="speak_pose_mode", api_visibility="undocumented", queue=False)
    run.click(_wrap(h.speak), [source, audio, pose_mode, pose_video], [video, status], api_name="speak",
              concurrency_id="gpu")


def _poses_tab(h: Handlers, ex, models: AppModels) -> None:
    _notice(models, "pose", "whisper")
    with gr.Row():
        with gr.Column():
            audio = gr.Audio(type="filepath", sources=["upload", "microphone"], label="Speech",
                             elem_id="poses-audio")
            with gr.Row():
                seed = gr.Number(0, precision=0, label="Seed (-1: random)")
                temperature = gr.Slider(0.1, 2, value=1, step=0.05, label="Temperature")
            render = gr.Checkbox(False, label="Also render the poses on a portrait (needs the speech part)")
            source = PhotoInput(type="filepath", label="Portrait photo (optional: the poses start from its head pose)",
                                 elem_id="poses-source")
            run = gr.Button("Generate head poses", variant="primary", elem_id="poses-run")
        with gr.Column():
            plot = gr.Image(label="Yaw, pitch, roll and translation over time", interactive=False, show_label=False,
                            elem_id="poses-plot")
            files = gr.File(label="Head poses (json, npy)", file_count="multiple", interactive=False,
                            elem_id="poses-files")
            video = gr.Video(label="Rendered", interactive=False, elem_id="poses-result-video")
            status = gr.Markdown(label="Status", elem_id="poses-status")
    gr.Examples([[str(ex.speech), str(ex.portrait)]], inputs=[audio, source], cache_examples=False,
                elem_id="poses-examples")
    run.click(_wrap(h.poses), [audio, source, seed, temperature, render], [plot, files, video, status],
              api_name="generate_poses", concurrency_id="gpu")


def build_app(models: AppModels, limits: Limits | None = None, workdir: Path | None = None) -> gr.Blocks:
    """The Blocks app for loaded ``models``; example and result files go under ``workdir``."""
    limits = limits or Limits()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="emoportraits-app-"))
    examples = make_examples(workdir / "examples")
    handlers = Handlers(models, limits, workdir / "results")
    with gr.Blocks(title="EMOPortraits", delete_cache=(3600, 7200)) as demo:   # Gradio's copies of files
        gr.Markdown(f"# {TITLE}")
        gr.Markdown(models.describe(), elem_id="model-info")
        gr.Markdown(f"Limits: driving videos up to {limits.max_video_seconds:g} s, speech up to "
                    f"{limits.max_audio_seconds:g} s, photos up to {limits.max_image_side} px.")
        with gr.Tabs():
            with gr.Tab("Reenactment", id="reenact"):
                _reenact_tab(handlers, examples, limits)
            with gr.Tab("Speech", id="speech"):
                _speech_tab(handlers, examples, models)
            with gr.Tab("Pose generation", id="poses"):
                _poses_tab(handlers, examples, models)
    demo.queue(default_concurrency_limit=1, max_size=32)
    demo.emoportraits_workdir = workdir          # for launch(allowed_paths=…)
    return demo


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="app.py", description=TITLE)
    p.add_argument("--model", metavar="DIR_OR_REPO",
                   help="model bundle folder, Hub repo, or 'official' (the authors' released model: downloaded on "
                        "first start, then cached) (default: $EMOPORTRAITS_MODEL, else the official model when it "
                        "is cached, else the bundled demo)")
    p.add_argument("--device", help="cpu, cuda, mps … (default: the best available)")
    p.add_argument("--host", help="address to serve on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    p.add_argument("--max-video-seconds", type=float, default=Limits.max_video_seconds)
    p.add_argument("--max-audio-seconds", type=float, default=Limits.max_audio_seconds)
    p.add_argument("--max-image-side", type=int, default=Limits.max_image_side)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="note: %(message)s")
    logging.getLogger("emoportraits").setLevel(logging.INFO)
    try:
        models = load_models(args.model, args.device)
    except (EmoPortraitsError, ValueError, OSError) as e:
        if os.environ.get("EMOPORTRAITS_DEBUG"):
            raise
        print(f"app.py: error: {e}", file=sys.stderr)
        return 2
    limits = Limits(args.max_video_seconds, args.max_audio_seconds, args.max_image_side)
    demo = build_app(models, limits)
    demo.launch(server_name=args.host, server_port=args.port, allowed_paths=[str(demo.emoportraits_workdir)],
                max_file_size="200mb")        # uploads beyond that are refused before they fill the disk
    return 0
