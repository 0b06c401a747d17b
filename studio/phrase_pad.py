"""Play it in: an on-screen keyboard with a step grid (and a MIDI keyboard, through Web MIDI, when the browser
has one) that records a 4-bar phrase in 4/4, one sixteenth per step. The phrase can be analysed, continued by
the GPT or inpainted by diffusion (it is one of the generation panel's "start from" sources).

The pad is plain HTML; PHRASE_JS (loaded in the page head, like the latent map's script) keeps the notes in
the page, draws them on the grid and mirrors them as JSON [[pitch, start step, steps], ...] into a hidden
textbox, whose value the handlers read. engine.phrase_midi turns them into a MIDI file.
"""
from __future__ import annotations

import json

import gradio as gr

from engines.errors import StudioError

LOW, HIGH = 60, 83        # the keys shown: C4 .. B5
STEPS = 64                # 4 bars of 16 sixteenths
LENGTHS = (("1/16", 1), ("1/8", 2), ("1/4", 4), ("1/2", 8), ("whole", 16))
NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

PHRASE_CSS = """
#phrase-pad .phrase-keys {position: relative; height: 110px; margin: 8px 0; user-select: none}
#phrase-pad .phrase-key {position: absolute; top: 0; border: 1px solid #555; border-radius: 0 0 4px 4px;
  cursor: pointer; font-size: 10px; display: flex; align-items: flex-end; justify-content: center; padding: 0}
#phrase-pad .phrase-key.white {background: #fafafa; color: #333; height: 108px; z-index: 1}
#phrase-pad .phrase-key.black {background: #222; color: #eee; height: 66px; z-index: 2}
#phrase-pad .phrase-key:active, #phrase-pad .phrase-key.lit {background: #7c83fd}
#phrase-pad .phrase-grid {position: relative; height: 120px; border: 1px solid rgba(128,128,128,0.5);
  background: repeating-linear-gradient(to right, rgba(128,128,128,0.35) 0 1px, transparent 1px 25%)}
#phrase-pad .phrase-note {position: absolute; background: #7c83fd; border-radius: 2px}
#phrase-pad .phrase-cursor {position: absolute; top: 0; bottom: 0; width: 2px; background: #e11d48}
#phrase-pad .phrase-bar {display: flex; gap: 6px; align-items: center; flex-wrap: wrap}
"""


def pad_html() -> str:
    """The keyboard, the controls and the empty grid."""
    whites = [p for p in range(LOW, HIGH + 1) if NAMES[p % 12][-1] != "#" and NAMES[p % 12] not in ("Eb", "Ab", "Bb")]
    width = 100 / len(whites)
    keys = []
    for p in range(LOW, HIGH + 1):
        name = f"{NAMES[p % 12]}{p // 12 - 1}"
        if p in whites:
            left = whites.index(p) * width
            keys.append(f'<button type="button" class="phrase-key white" data-phrase-pitch="{p}" title="{name}" '
                        f'style="left:{left:.3f}%;width:{width:.3f}%">{name if p % 12 == 0 else ""}</button>')
        else:
            left = (whites.index(p - 1) + 0.7) * width
            keys.append(f'<button type="button" class="phrase-key black" data-phrase-pitch="{p}" title="{name}" '
                        f'style="left:{left:.3f}%;width:{0.6 * width:.3f}%"></button>')
    lengths = "".join(f'<option value="{steps}"{" selected" if steps == 2 else ""}>{label}</option>'
                      for label, steps in LENGTHS)
    return f"""<div id="phrase-pad">
  <div class="phrase-bar">
    <label>Note length <select id="phrase-length">{lengths}</select></label>
    <label><input type="checkbox" id="phrase-chord"> chord (the next note starts with this one)</label>
    <button type="button" data-phrase-action="rest">Rest</button>
    <button type="button" data-phrase-action="undo">Undo</button>
    <button type="button" data-phrase-action="clear">Clear</button>
    <button type="button" data-phrase-action="midi">Connect a MIDI keyboard</button>
  </div>
  <div class="phrase-keys">{''.join(keys)}</div>
  <div class="phrase-grid" id="phrase-grid"><div class="phrase-cursor" id="phrase-cursor" style="left:0%"></div></div>
  <div id="phrase-status">Step 1 of {STEPS}: press a key (or play your MIDI keyboard) to write a note there.</div>
</div>"""


PHRASE_JS = f"""
<script>
(() => {{
  const STEPS = {STEPS}, LOW = {LOW}, HIGH = {HIGH};
  const phrase = {{notes: [], cursor: 0, last: 0}};
  function box() {{ return document.querySelector('#phrase-notes textarea, #phrase-notes input'); }}
  function render() {{
    const grid = document.getElementById('phrase-grid');
    if (!grid) return;
    grid.querySelectorAll('.phrase-note').forEach((n) => n.remove());
    const pitches = phrase.notes.map((n) => n[0]);   // the keys shown, widened to any MIDI-keyboard note
    const low = Math.min(LOW, ...pitches), span = Math.max(HIGH, ...pitches) - low + 1;
    for (const [pitch, start, steps] of phrase.notes) {{
      const block = document.createElement('div');
      block.className = 'phrase-note';
      block.style.cssText = `left:${{100 * start / STEPS}}%;width:${{100 * steps / STEPS}}%;` +
        `bottom:${{100 * (pitch - low) / span}}%;height:${{Math.max(100 / span, 3)}}%`;
      grid.appendChild(block);
    }}
    document.getElementById('phrase-cursor').style.left = `${{100 * phrase.cursor / STEPS}}%`;
    const status = document.getElementById('phrase-status');
    status.textContent = phrase.cursor >= STEPS ? `The 4 bars are full (${{phrase.notes.length}} notes).`
      : `Step ${{phrase.cursor + 1}} of ${{STEPS}} (bar ${{Math.floor(phrase.cursor / 16) + 1}}); ` +
        `${{phrase.notes.length}} notes so far.`;
    const b = box();
    if (b) {{ b.value = JSON.stringify(phrase.notes); b.dispatchEvent(new Event('input', {{bubbles: true}})); }}
  }}
  function length() {{ return parseInt(document.getElementById('phrase-length')?.value || '2', 10); }}
  function play(pitch) {{
    if (phrase.cursor >= STEPS) return;
    const chord = document.getElementById('phrase-chord')?.checked;
    const steps = Math.min(length(), STEPS - phrase.cursor);
    phrase.notes.push([pitch, phrase.cursor, steps]);
    phrase.last = phrase.cursor;
    if (!chord) phrase.cursor += steps;
    render();
  }}
  document.addEventListener('click', (event) => {{
    const key = event.target.closest('#phrase-pad [data-phrase-pitch]');
    if (key) {{ play(parseInt(key.dataset.phrasePitch, 10)); return; }}
    const action = event.target.closest('#phrase-pad [data-phrase-action]')?.dataset.phraseAction;
    if (action === 'rest') phrase.cursor = Math.min(STEPS, phrase.cursor + length());
    else if (action === 'undo' && phrase.notes.length) phrase.cursor = phrase.notes.pop()[1];
    else if (action === 'clear') {{ phrase.notes = []; phrase.cursor = 0; }}
    else if (action === 'midi') {{ connectMidi(); return; }}
    else return;
    render();
  }});
  function connectMidi() {{
    const status = document.getElementById('phrase-status');
    if (!navigator.requestMIDIAccess) {{ status.textContent = 'This browser has no Web MIDI: use the keys above.'; return; }}
    navigator.requestMIDIAccess().then((access) => {{
      const inputs = [...access.inputs.values()];
      if (!inputs.length) {{ status.textContent = 'No MIDI keyboard is connected: use the keys above.'; return; }}
      for (const input of inputs) {{
        input.onmidimessage = (message) => {{
          const [kind, pitch, velocity] = message.data;
          if ((kind & 0xf0) === 0x90 && velocity > 0 && pitch >= 21 && pitch <= 108) play(pitch);
        }};
      }}
      status.textContent = `Listening to ${{inputs.map((i) => i.name).join(', ')}}: each key you press is written at the cursor.`;
    }}, () => {{ status.textContent = 'The browser did not allow MIDI access: use the keys above.'; }});
  }}
}})();
</script>
"""


def phrase_notes(text: str | None) -> list:
    """The hidden textbox's JSON -> [[pitch, start, steps], ...]; StudioError when there is none or it is garbled."""
    try:
        notes = json.loads(text or "[]")
    except json.JSONDecodeError:
        raise StudioError("the phrase could not be read; press Clear and play it again") from None
    if not notes:
        raise StudioError("play a phrase first: press keys on the keyboard (or a MIDI keyboard)")
    return notes


def build_phrase_pad():
    """The pad inside the current layout: (the hidden notes textbox, the Analyse button, the analysis line)."""
    gr.HTML(pad_html(), elem_id="phrase-pad-box")
    notes = gr.Textbox("[]", elem_id="phrase-notes", elem_classes="studio-hidden", show_label=False)
    analyse = gr.Button("Analyse the phrase", elem_id="phrase-analyse", size="sm")
    readout = gr.Markdown(elem_id="phrase-readout")
    return notes, analyse, readout
