"""``diffusers-uip2p app``: the library in a web page (Gradio, from the optional extra ``[app]``).

Each tab is a thin layer over one command-line command. The form becomes that command's arguments, parsed
by the command line's own parser (so its defaults and its checks apply), and the same ``compute_*``
function runs. It runs the checks first, then the pipeline. The page shows the `Result`: the pipeline's
output, the report and the pictures. A bad input shows the library's one-line message, never a traceback.

Requests are queued and run one at a time. On a CPU two edits at once would each take twice as long.
The pipelines' labelled progress bars (candidate k/n, forward or reverse, inversion, sampling) show in the
page. Models load on first use and stay loaded.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import os
import warnings

from .cli import commands
from .cli.parser import build_parser
from .cli.images import sample_captions, side_by_side

SAMPLES = [name.removesuffix(".png") for name in sample_captions()]
DISPLAY_SCALE = 4  # the Shapes world's 64×64 pictures, enlarged with nearest neighbours to be seen
METHODS = ("auto", "p2p", "masactrl", "sdedit", "direct")
RULES = ("default", "anchored", "midpoint", "ddim", "coupled")
FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # local fonts only: the page fetches nothing from outside


def cli_arguments(argv: list[str]):
    """``argv`` parsed by the command line's parser; its error message (not an exit) when it refuses."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_args(argv)
    except SystemExit:
        raise ValueError(stderr.getvalue().strip().splitlines()[-1]) from None


def _image_argument(sample: str | None, upload: str | None) -> str:
    """An uploaded file wins over the chosen sample (a sample keeps its name: it has a known caption)."""
    if upload:
        return upload
    if sample:
        return sample
    raise ValueError("no image: choose a bundled sample or upload an image.")


def _enlarged(image):
    return side_by_side([image], DISPLAY_SCALE) if max(image.size) <= 128 else image


def _verdict(report: dict) -> str:
    verdict = report.get("shapes_evaluator")
    if verdict is None:
        return "No verdict: the Shapes evaluator judges edits of the bundled samples only."
    if "not_judged" in verdict:
        return f"Not judged: {verdict['not_judged']}"
    return "**Shapes evaluator:** " + ", ".join(f"{key.replace('_', ' ')} {'yes' if value else 'no'}"
                                                for key, value in verdict.items())


def _ranking(result) -> list[tuple]:
    """Each candidate, best first: its edit, then its reverse edit with the reversibility score."""
    out, report = result.output, result.report
    if out.reconstructions is None:
        return [(_enlarged(out.images[0]), f"edit (seed {report['seed']}; no reverse instruction, so no score)")]
    pictures = []
    for rank, (seed, score) in enumerate(zip(out.seeds, out.reversibility, strict=True), start=1):
        pictures += [(_enlarged(out.images[rank - 1]), f"#{rank} seed {seed}: edit"),
                     (_enlarged(out.reconstructions[rank - 1]), f"#{rank} seed {seed}: reverse edit, "
                                                                 f"reversibility {score:.4f}")]
    return pictures


def _method_text(report: dict) -> str:
    lines = [f"**Method:** `{report['edit_method']}` (asked: `{report['method_asked']}`), parameters "
             f"`{report['edit_parameters']}`"]
    if report.get("edit_task"):
        decided = ("the task classifier" if report.get("task_probabilities")
                   else f"the word rule {report['task_rule']!r}")
        lines.append(f"**Task:** `{report['edit_task']}`, decided by {decided}")
    lines.append(f"**Source prompt:** {report['source_prompt']}")
    lines.append(f"**Exact reconstruction:** latent relative error {report['reconstruction_latent_relative_error']:.3e}"
                 " against the image's own latents")
    return "  \n".join(lines)


class App:
    """The two tabs' handlers, with the models they load kept for the next request."""

    def __init__(self, model: str | None = None, inversion_model: str | None = None):
        self.model, self.inversion_model = model, inversion_model
        self.load_editor = functools.cache(commands.load_edit_pipeline)
        self.load_pipeline = functools.cache(commands.load_auto_edit_pipeline)

    def instruction_edit(self, sample, upload, instruction, reverse, candidates, guidance_scale,
                         image_guidance_scale, steps, seed):
        argv = ["edit", "--attention", "--candidates", str(candidates), "--guidance-scale", str(guidance_scale),
                "--image-guidance-scale", str(image_guidance_scale), "--steps", str(steps), "--seed", str(seed)]
        argv += ["--reverse", reverse] if reverse and reverse.strip() else []
        argv += ["--model", self.model] if self.model else []
        result = commands.compute_edit(cli_arguments([*argv, "--", _image_argument(sample, upload), instruction]),
                                       load=self.load_editor)
        return (_enlarged(result.columns[0]), _enlarged(result.image), _ranking(result), result.attention,
                _verdict(result.report), result.report)

    def caption(self, sample, upload) -> str:
        argv = ["auto-edit", *(["--model", self.inversion_model] if self.inversion_model else [])]
        return commands.caption(cli_arguments([*argv, "--", _image_argument(sample, upload), "unused"]),
                                load=self.load_pipeline)["source_prompt"]

    def inversion_edit(self, sample, upload, source_prompt, target_prompt, method, target_rule, steps,
                       guidance_scale):
        argv = ["auto-edit", "--attention", "--method", method, "--steps", str(steps),
                "--guidance-scale", str(guidance_scale)]
        argv += ["--target-rule", target_rule] if target_rule != "default" else []
        argv += ["--source-prompt", source_prompt] if source_prompt and source_prompt.strip() else []
        argv += ["--model", self.inversion_model] if self.inversion_model else []
        result = commands.compute_auto_edit(
            cli_arguments([*argv, "--", _image_argument(sample, upload), target_prompt]), load=self.load_pipeline)
        report = result.report
        return (*(_enlarged(column) for column in result.columns), report.get("task_probabilities") or {},
                _method_text(report), result.attention, _verdict(report), report)


def _in_page(handler):
    """``handler`` for Gradio: the pipelines' tqdm bars shown as the page's progress, and the library's
    one-line message in the page (gr.Error) where the command line would print it."""
    import gradio as gr
    import PIL

    def run(*args):
        try:
            return handler(*args[:-1])  # the last one is the progress tracker
        except (ValueError, TypeError, OSError, PIL.UnidentifiedImageError) as error:
            raise gr.Error(str(error), print_exception=False) from None

    parameters = list(inspect.signature(handler).parameters.values())
    progress = inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                 default=gr.Progress(track_tqdm=True))
    run.__signature__ = inspect.Signature([*parameters, progress])
    return run


def build(app: App):
    """The Gradio page: the instruction-edit tab (UIP2P) and the inversion-edit tab (DSI)."""
    import gradio as gr

    with gr.Blocks(title="diffusers-uip2p", analytics_enabled=False) as page:
        gr.Markdown("# diffusers-uip2p\nInstruction editing (UIP2P) and exact inversion editing (DSI). "
                    "Without `--model` the app runs the Shapes-world models shipped in the package, offline.")
        with gr.Tab("Instruction edit (UIP2P)"):
            with gr.Row():
                with gr.Column():
                    sample = gr.Dropdown(SAMPLES, value=SAMPLES[0], label="bundled sample")
                    upload = gr.Image(type="filepath", label="or your own image (used when given)")
                    instruction = gr.Textbox("make the red triangle blue", label="instruction",
                                             elem_id="edit-instruction")
                    reverse = gr.Textbox("make the blue triangle red", label="reverse instruction (optional)")
                    with gr.Row():
                        candidates = gr.Slider(1, 8, value=2, step=1, label="candidates")
                        steps = gr.Slider(1, 100, value=50, step=1, label="steps", elem_id="edit-steps")
                        seed = gr.Number(0, precision=0, label="seed")
                    with gr.Row():
                        guidance = gr.Slider(0, 15, value=7.5, step=0.5, label="text guidance")
                        image_guidance = gr.Slider(0, 5, value=1.5, step=0.1, label="image guidance")
                    edit_button = gr.Button("Edit", variant="primary", elem_id="edit-button")
                with gr.Column():
                    with gr.Row():
                        shown_input = gr.Image(label="input, as the model sees it", format="png")
                        edited = gr.Image(label="edit (best candidate)", format="png", elem_id="edit-result")
                    verdict = gr.Markdown(elem_id="edit-verdict")
                    ranking = gr.Gallery(label="candidates, ranked by reversibility: edit, reverse edit",
                                         columns=4, format="png", height=260)
                    attention = gr.Image(label="per-token cross-attention of the instruction", format="png")
                    report = gr.JSON(label="report (as the command line writes it)")
            edit_button.click(_in_page(app.instruction_edit),
                              [sample, upload, instruction, reverse, candidates, guidance, image_guidance, steps,
                               seed], [shown_input, edited, ranking, attention, verdict, report],
                              api_name="instruction_edit")
        with gr.Tab("Inversion edit (DSI)"):
            with gr.Row():
                with gr.Column():
                    dsi_sample = gr.Dropdown(SAMPLES, value="striped", label="bundled sample")
                    dsi_upload = gr.Image(type="filepath", label="or your own image (used when given)")
                    source = gr.Textbox(label="source prompt (empty: the sample's caption)")
                    caption_button = gr.Button("Caption it")
                    target = gr.Textbox("a large yellow square in the center and a large black hexagon on the "
                                        "right on a striped gray background", label="target prompt")
                    with gr.Row():
                        method = gr.Dropdown(list(METHODS), value="auto", label="method")
                        rule = gr.Dropdown(list(RULES), value="default", label="target-branch rule")
                    with gr.Row():
                        dsi_steps = gr.Slider(2, 100, value=50, step=1, label="steps")
                        dsi_guidance = gr.Slider(0, 15, value=7.5, step=0.5, label="guidance")
                    dsi_button = gr.Button("Invert and edit", variant="primary", elem_id="dsi-button")
                with gr.Column():
                    with gr.Row():
                        dsi_input = gr.Image(label="input, as the model sees it", format="png")
                        reconstruction = gr.Image(label="exact reconstruction", format="png")
                        dsi_edited = gr.Image(label="edit", format="png", elem_id="dsi-result")
                    chosen = gr.Markdown()
                    probabilities = gr.Label(label="task probabilities", num_top_classes=5)
                    dsi_verdict = gr.Markdown()
                    dsi_attention = gr.Image(label="per-token cross-attention of the target prompt", format="png")
                    dsi_report = gr.JSON(label="report (as the command line writes it)")
            caption_button.click(_in_page(app.caption), [dsi_sample, dsi_upload], source, api_name="caption")
            dsi_button.click(_in_page(app.inversion_edit),
                             [dsi_sample, dsi_upload, source, target, method, rule, dsi_steps, dsi_guidance],
                             [dsi_input, reconstruction, dsi_edited, probabilities, chosen, dsi_attention, dsi_verdict,
                              dsi_report], api_name="inversion_edit")
    return page.queue(default_concurrency_limit=1)


def launch(model: str | None = None, inversion_model: str | None = None, host: str = "127.0.0.1",
           port: int = 7860, share: bool = False, block: bool = True):
    """Serve the page; with ``block=False`` return at once (the server runs in a thread; ``.close()`` it)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # Gradio's own deprecation notices (pandas, numpy) on every request: nothing the user can act on.
    warnings.filterwarnings("ignore", module=r"gradio(\.|$)")
    try:
        import gradio as gr
    except ImportError:
        raise ImportError("the app needs Gradio: pip install 'diffusers-uip2p[app]'") from None

    page = build(App(model, inversion_model))
    page.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, quiet=True,
                ssr_mode=False, mcp_server=False,
                theme=gr.themes.Default(font=FONTS, font_mono=["ui-monospace", "monospace"]))
    return page
