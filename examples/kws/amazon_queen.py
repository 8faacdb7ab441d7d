#!/usr/bin/env python3
"""Real speech for the keyword set: the voice acting of *Flight of the Amazon Queen* (issue 20).

Debian main ships the game (``flight-of-the-amazon-queen`` 1.0.0-9); its ``queen.1c`` archive holds
6,745 voice-acted English lines (MP3, 11.025 kHz). This module

1. ``extract``: reads the archive's index, names each line's speaker and writes the lines whose speaker
   is known as 16 kHz FLAC, split BY CHARACTER (``split_of_character``): some characters only in test,
   some only in validation, the rest (Joe, the hero, included) in training;
2. ``transcribe``: the teacher (Whisper tiny.en, CTranslate2 int8, ``teacher.py``) writes every line's
   words with their times to ``transcripts.jsonl`` (resumable: a later run continues it);
3. ``cut``: 1 s cuts centred on each keyword the teacher heard, kept only when the teacher hears the
   keyword again in the cut alone (``confirm_cut``); 1 s windows of the lines away from any keyword
   become real ``_unknown_`` clips; keyword-free lines are listed in ``talk.csv`` as background talk
   for training streams.

Speaker names (from ScummVM's queen engine, talk.cpp): a dialogue line is ``%2d%4x[JP]%1x``: the
dialogue's talk key (the ``.DOG`` file whose header holds that key names the character), the
dialogue node, ``J`` for Joe or ``P`` for the other person, the segment; ``%2dSSSSJ``/``%2dXXXXJ``
are Joe's openings, ``JOE*`` Joe's remarks. A cut-scene line (``C*``, ``CDINT*``, ``COMIC*``, ...) is
``<cut scene, 5 chars><record, 2 digits><segment>``: its speaker is the person object of that record of
the ``.CUT`` file (``cutaway_speakers``), named by the game's data only where that is certain: Joe, an
object Joe opens a ``.DOG`` with by talking to it (QUEEN.JAS), or an object whose actors all bear its
name; narration, props speaking and persons the engine may draw as another character stay out, so no
held-out character can leak into training through them.

Licence of the game data (its Debian copyright file): free to redistribute and modify; modified
versions must say so; not to be sold. The clips written here are modified (cut, resampled) game audio.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from hear_edge.errors import HearEdgeError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audio import SR, frame_db, resample, to_mono, to_pcm16, trim_silence, window  # noqa: E402
from common import KEYWORDS, UNKNOWN, log, read_csv, stable_int  # noqa: E402
from splits import SPLITS, pinned_or_hashed_split  # noqa: E402

DEB_PACKAGE = "flight-of-the-amazon-queen"
DEB_VERSION = "1.0.0-9"
DEB_SHA256 = "40c08fd258d6fe95c46c1eaf5e9137f84ba330657995a281bd887c94a560a0f1"
ARCHIVE_REL = "usr/share/scummvm/flight-of-the-amazon-queen/queen.1c"

INDEX_MAGIC = b"QTBL"
COUNT_AT = 13            # big-endian uint16 entry count
ENTRIES_AT = 15          # then 21 bytes per entry: name[12], 1 byte, uint32 offset, uint32 size
ENTRY_BYTES = 21
DOG_HEADER_BYTES = 20    # a .DOG (dialogue) file: 20-byte header, then levelMax, uniqueKey, talkKey
JOE = "JOE"

# The split is by character. Joe speaks a third of the attributed lines: training.
# Test: ~22 % of the other characters' lines, women and men; validation: ~9 %.
CHARACTER_PINS = {
    JOE: "train",
    "WITCH": "test", "FAYE": "test", "KLUNK": "test", "HENRY": "test", "LARIS": "test", "CHEF": "test",
    "NAOMI": "val", "LOU": "val", "IAN": "val", "WEDGE": "val",
}
SPLIT_SALT = "hear-edge-amazon-queen-v1"
CHARACTER_TEST_FRAC, CHARACTER_VAL_FRAC = 0.2, 0.1  # for characters not pinned (other archives)

CUT_S = 1.0
MAX_KEYWORD_S = 0.9      # a word longer than this by the teacher's times is not cut
MIN_WORD_PROB = 0.3      # the teacher's word probability in the full line
SHIFT_EDGE_S = 0.02      # a shifted keyword cut keeps the whole word this far inside its window
UNKNOWN_MARGIN_S = 0.15  # an _unknown_ window keeps this far from any keyword the teacher heard
UNKNOWN_PER_LINE = 3     # at most this many _unknown_ windows from one line
SPEECH_FLOOR_DB = -45.0  # an _unknown_ window's loudest 10 ms frame is above this (dBFS)


class QueenDataError(HearEdgeError, ValueError):
    """An archive that is not the game's queen.1c, or a line that does not decode."""


@dataclass(frozen=True)
class Entry:
    name: str
    offset: int
    size: int

    def read(self, data: bytes) -> bytes:
        """This entry's bytes in the archive `data`."""
        return data[self.offset: self.offset + self.size]


def read_index(data: bytes) -> list:
    """The archive's entries (name, offset, size), checked against the archive's length."""
    if data[:4] != INDEX_MAGIC or len(data) < ENTRIES_AT:
        raise QueenDataError(f"expected a queen.1c archive starting with {INDEX_MAGIC!r}, got "
                             f"{data[:4]!r} ({len(data)} bytes); pass {ARCHIVE_REL} from the "
                             f"{DEB_PACKAGE} package")
    (count,) = struct.unpack(">H", data[COUNT_AT:ENTRIES_AT])
    end = ENTRIES_AT + count * ENTRY_BYTES
    if end > len(data):
        raise QueenDataError(f"the index lists {count} entries ({end} bytes) but the archive has only "
                             f"{len(data)} bytes: a truncated download? fetch the .deb again")
    entries = []
    for i in range(count):
        raw = data[ENTRIES_AT + i * ENTRY_BYTES: ENTRIES_AT + (i + 1) * ENTRY_BYTES]
        name = raw[:12].split(b"\0", 1)[0].decode("latin-1")
        offset, size = struct.unpack(">II", raw[13:21])
        if offset + size > len(data):
            raise QueenDataError(f"entry {name!r} ends at byte {offset + size}, past the archive's "
                                 f"{len(data)} bytes: a truncated or different archive")
        entries.append(Entry(name, offset, size))
    return entries


def character_of_dialogue(dog_name: str) -> str:
    """'CHIEF2.DOG' -> 'CHIEF' (the numbered dialogues of one character are one character)."""
    return re.sub(r"\d+$", "", dog_name.rsplit(".", 1)[0]).upper()


def talk_keys(data: bytes, entries: list) -> dict:
    """talk key -> character, read from every .DOG file's header."""
    keys = {}
    for e in entries:
        if e.name.upper().endswith(".DOG") and e.size >= DOG_HEADER_BYTES + 6:
            (key,) = struct.unpack(">h", data[e.offset + DOG_HEADER_BYTES + 4: e.offset + DOG_HEADER_BYTES + 6])
            keys[key] = character_of_dialogue(e.name)
    return keys


_DIALOGUE = re.compile(r"^(\d\d)([0-9A-F]{4}|SSSS|XXXX)([JP])([0-9A-F])$")  # segment: one hex digit


def speaker_of(stem: str, keys: dict) -> str | None:
    """The character saying a speech entry ('0212A4P1' -> the character of talk key 2), or None."""
    stem = stem.upper()
    m = _DIALOGUE.match(stem)
    if m:
        return JOE if m.group(3) == "J" else keys.get(int(m.group(1)))
    if re.match(r"^JOE\d+$", stem):
        return JOE
    return None


# --- Cut-scene lines (ScummVM engines/queen: cutaway.cpp, logic.cpp, command.cpp, grid.cpp) -------------
# A cut-scene ``<NAME>.CUT`` lists objects; a person object (an object whose image is -3/-4 in QUEEN.JAS,
# or Joe: object 0) with a sentence says it through the speech entries ``<NAME padded with _ to 5>``
# ``<record number, 2 digits><segment, 1 hex digit>``. Who a person object is comes from the game's own
# data: the .DOG file Joe opens by talking to an object of that name (QUEEN.JAS's TALK_TO commands, and a
# cut scene's closing dialogue). Where the actors the engine may draw in that person's place name another
# character (QUEEN.JAS's actor table), or no dialogue names the object and its actors do not bear its
# name, the line stays out: never a guess for a held-out character.
BANK_HEADER_BYTES = 20   # QUEEN.JAS and every .CUT: the same 20-byte bank header as a .DOG
JOE_RESPONSES = 40       # QUEEN2.JAS: Joe's stock responses, between the verbs and the actor animations
VERB_TALK_TO = 8
PERSON_IMAGES = (-3, -4)
CUT_OBJECT_FIELDS = 17   # int16 fields of a cut-scene object record
CUT_ANIM_FIELDS = 9      # int16 fields of one animation frame after its header (song included)
OBJECT_TEXT_SPEAK = (-2, -3)   # narration: spoken by no person, left out
OBJECT_TEXT_DISPLAY = -4
OBJECT_ROOMFADE, OBJECT_JOE = -1, 0


class _Cursor:
    """Big-endian int16/uint16 reader over one file, with a clear error past its end."""

    def __init__(self, blob: bytes, name: str, at: int = 0):
        self.blob, self.name, self.at = blob, name, at

    def take(self, fmt: str):
        size = struct.calcsize(">" + fmt)
        if self.at + size > len(self.blob):
            raise QueenDataError(f"{self.name}: expected {size} more bytes at offset {self.at}, the file has "
                                 f"{len(self.blob)}: not the {DEB_PACKAGE} {DEB_VERSION} data")
        v = struct.unpack(">" + fmt, self.blob[self.at: self.at + size])
        self.at += size
        return v

    def u16(self) -> int:
        return self.take("H")[0]

    def skip(self, n_bytes: int) -> None:
        self.take(f"{n_bytes}x")


@dataclass(frozen=True)
class GameData:
    """What QUEEN.JAS / QUEEN2.JAS say about the objects: name, room, image; the dialogue characters
    linked to each object number; the actors (room, person number, actor name)."""
    names: tuple
    rooms: tuple
    images: tuple
    room_first: tuple
    dialogues: dict
    actors: tuple


def read_game_data(data: bytes, entries: list):
    """QUEEN.JAS's object, command and actor tables (logic.cpp readQueenJas), or None where the archive
    has no QUEEN.JAS / QUEEN2.JAS (then no cut-scene line is attributed)."""
    by_name = {e.name.upper(): e for e in entries}
    if "QUEEN.JAS" not in by_name or "QUEEN2.JAS" not in by_name:
        return None
    r = _Cursor(by_name["QUEEN.JAS"].read(data), "QUEEN.JAS", BANK_HEADER_BYTES)
    n_rooms, n_names, n_objects, n_descriptions = r.take("4H")
    rows = [r.take("hHHHhHHh") for _ in range(n_objects)]   # name, x, y, description, entry, room, state, image
    objects = [(0, 0, 0)] + [(v[0], v[5], v[7]) for v in rows]
    room_first = (0,) + r.take(f"{n_rooms + 1}H")  # logic.cpp _roomData: 1-based
    r.skip(2 * n_rooms)                       # room sound effects
    r.skip(10 * r.u16())                      # inventory items
    r.skip(10 * r.u16())                      # graphics
    for _ in range(n_rooms):                  # walk areas per room (grid.cpp readDataFrom)
        _, n_areas = r.take("hh")
        r.skip(16 * max(n_areas, 0))
    r.skip(8 * n_objects)                     # object boxes
    r.skip(6 * r.u16())                       # walk-off points
    r.skip(8 * r.u16())                       # object descriptions
    n = r.u16()                               # command list (a table of 0 still holds one record)
    commands = [None] + [r.take("10h") for _ in range(max(n, 1))]
    for record_bytes in (6, 6, 6):            # command areas, objects, inventory
        r.skip(record_bytes * max(r.u16(), 1))
    n = r.u16()
    game_states = [r.take("hhhH") for _ in range(max(n, 1))][:n]
    r.u16()                                   # entry object
    r.skip(4 * r.u16())                       # furniture
    n_actors, n_actor_anims, n_actor_names, _ = r.take("4H")
    actor_rows = [r.take("hhH18x") for _ in range(n_actors)]
    lines = by_name["QUEEN2.JAS"].read(data).decode("latin-1").split("\r\n")
    names_at = n_descriptions
    actors_at = n_descriptions + n_names + n_rooms + 12 + JOE_RESPONSES + n_actor_anims
    if len(lines) < actors_at + n_actor_names:
        raise QueenDataError(f"QUEEN2.JAS has {len(lines)} lines, QUEEN.JAS asks for {actors_at + n_actor_names}: "
                             f"not the {DEB_PACKAGE} {DEB_VERSION} data")

    def text(at: int, count: int, k: int) -> str:
        return lines[at + k - 1] if 1 <= k <= count else ""

    names = tuple(text(names_at, n_names, abs(o[0])) for o in objects)
    dialogues: dict = {}
    for command_id, _, _, speak in game_states:   # command.cpp setConditions: speakValue names a .DOG
        desc = text(0, n_descriptions, speak)
        if desc.upper().endswith(".DOG") and 1 <= command_id < len(commands):
            verb, noun = commands[command_id][:2]
            if verb == VERB_TALK_TO and 0 < noun <= n_objects:
                dialogues.setdefault(noun, set()).add(character_of_dialogue(desc))
    actors = tuple((room, bob, text(actors_at, n_actor_names, name)) for room, bob, name in actor_rows)
    return GameData(names=names, rooms=tuple(o[1] for o in objects), images=tuple(o[2] for o in objects),
                    room_first=tuple(room_first), dialogues=dialogues, actors=actors)


def _pascal(blob: bytes, at: int) -> tuple:
    """A length-prefixed string padded to an even offset (talk.cpp getString): (text, next offset)."""
    if at >= len(blob):
        raise QueenDataError(f"a cut-scene string at offset {at} is past the file's {len(blob)} bytes")
    n = blob[at]
    text = blob[at + 1: at + 1 + n].decode("latin-1")
    return text, (at + 1 + n + 1) & ~1 if n else at + 1


@dataclass(frozen=True)
class CutawayLine:
    prefix: str     # the speech entries' first 7 characters
    person: int     # the object number speaking (0: Joe), or None for narration
    sentence: str

    def entries(self) -> list:
        """The speech entries the engine plays for this sentence (talk.cpp speak/speakSegment): one per
        segment, a segment ending at each '*' command but the grab commands GD/GM; narration plays
        segment 1 only (cutaway.cpp handleText)."""
        if self.person is None:
            return [self.prefix + "1"]
        played, start, index, i, text = [], 0, 0, 0, self.sentence
        while i < len(text):
            if text[i] != "*":
                i += 1
                continue
            command = text[i + 1: i + 3]
            i += 3 + (11 if command == "XY" else 0)
            if command not in ("GD", "GM"):
                played.append(index)
            index += 1
            start = i
        if start != i or not text:
            played.append(index)
        return [self.prefix + f"{k + 1:x}".upper() for k in played]


def read_cutaway(blob: bytes, name: str, game: GameData) -> tuple:
    """(lines, closing dialogue, the object it talks to) of one .CUT file (cutaway.cpp load/run); raises
    QueenDataError where its records do not end at its game-state block (a misread record)."""
    base = name.rsplit(".", 1)[0].upper()
    c = _Cursor(blob, name, BANK_HEADER_BYTES)
    _, count, _, game_state_at, sentence_at, banks_at = c.take("HhhHHH")
    body = BANK_HEADER_BYTES
    sentence_at += body
    _, sentence_at = _pascal(blob, sentence_at)         # the entry string (Joe's facing), said by no one
    lines = []
    for k in range(1, abs(count) + 1):
        v = c.take(f"{CUT_OBJECT_FIELDS}h")
        number, anim_list, execute, from_object = v[0], v[4], v[5], v[12]
        c.skip(2 * c.take("h")[0])                       # the persons turned on
        sentence, sentence_at = _pascal(blob, sentence_at)
        if number == OBJECT_ROOMFADE:
            number = OBJECT_JOE
        kind = "animation"                                # cutaway.cpp getObjectType
        if number > 0 and not anim_list and number < len(game.images) and game.images[number] in PERSON_IMAGES:
            kind = "person"
        elif number == OBJECT_JOE and not anim_list:
            kind = "person"
        if from_object > 0:
            kind = "none"
        if number in OBJECT_TEXT_SPEAK or number == OBJECT_TEXT_DISPLAY:
            kind = "text"
        if kind == "animation" and not execute:
            kind = "none"
        if kind == "animation":
            while c.take("h")[0] != -2:
                c.skip(2 * CUT_ANIM_FIELDS)
        prefix = (base + "_____")[:5] + f"{k:02d}"
        if number in OBJECT_TEXT_SPEAK:
            lines.append(CutawayLine(prefix, None, sentence))
        elif kind == "person" and sentence not in ("", "*") and not sentence.startswith("#"):
            lines.append(CutawayLine(prefix, number, sentence))
    if not 0 <= body + game_state_at - c.at <= 4:
        raise QueenDataError(f"{name}: its object records end at byte {c.at}, its game-state block starts at "
                             f"{body + game_state_at}: a record was misread")
    at = body + banks_at
    (n_banks,) = struct.unpack(">H", blob[at: at + 2])
    at += 2
    for _ in range(n_banks):
        _, at = _pascal(blob, at)
    talk_file, at = _pascal(blob, at)
    (talk_to,) = struct.unpack(">h", blob[at: at + 2])
    return lines, talk_file, talk_to


def _actor_base(actor: str) -> str:
    """'X3_RITA' -> 'RITA', 'FAYE-H' -> 'FAYE', 'MAN1' -> 'MAN', 'LOLA_SHOWER' -> 'LOLA'."""
    return re.sub(r"\d+$", "", re.split(r"[-_]", re.sub(r"^X\d+_", "", actor.upper()))[0])


def cutaway_speakers(data: bytes, entries: list, keys: dict) -> dict:
    """speech-entry prefix (7 characters) -> the character saying it, for every cut-scene person line
    whose speaker the game's data names for certain (see above); None for the others."""
    game = read_game_data(data, entries)
    if game is None:
        return {}
    cuts = []
    for e in sorted((e for e in entries if e.name.upper().endswith(".CUT")), key=lambda e: e.name):
        try:
            cuts.append(read_cutaway(e.read(data), e.name, game))
        except QueenDataError as err:
            log(f"[queen] {err}: its lines stay out")
    dialogues = {k: set(v) for k, v in game.dialogues.items()}
    for _, talk_file, talk_to in cuts:           # a cut scene that ends in a dialogue with that person
        if talk_file.upper().endswith(".DOG") and 0 < talk_to < len(game.names):
            dialogues.setdefault(talk_to, set()).add(character_of_dialogue(talk_file))
    by_name: dict = {}
    for obj, chars in dialogues.items():
        by_name.setdefault(game.names[obj], set()).update(chars)
    characters = sorted(set(keys.values()) | {JOE})

    def actors_of(obj: int) -> set:
        room = game.rooms[obj]
        bob = sum(1 for i in range(game.room_first[room] + 1, obj + 1) if game.images[i] in PERSON_IMAGES)
        return {_actor_base(a) for r, b, a in game.actors if r == room and b == bob and a}

    def character(obj) -> str | None:
        if obj is None:
            return None
        if obj == OBJECT_JOE:
            return JOE
        chars = by_name.get(game.names[obj], set())
        drawn = actors_of(obj)
        if len(chars) == 1:
            (who,) = chars
            others = {c for c in characters if c != who and any(a.startswith(c) for a in drawn)}
            return None if others else who
        if chars:
            return None
        first = (game.names[obj].split() or [""])[0].upper()
        return first if first and drawn and drawn == {first} else None

    speakers: dict = {}
    for lines, _, _ in cuts:
        for line in lines:
            who = character(line.person)
            for stem in line.entries():   # a stem two records claim with different speakers: none
                speakers[stem] = who if speakers.get(stem, who) == who else None
    return speakers


def speaker_of_cutaway(stem: str, cut_speakers: dict) -> str | None:
    """The character saying a cut-scene speech entry ('C41B_082' -> the person of record 8 of C41B.CUT,
    whose sentence plays a segment 2), or None."""
    return cut_speakers.get(stem.upper())


def split_of_character(character: str) -> str:
    """train / val / test for a character: pinned for the game's cast, else a stable hash."""
    return pinned_or_hashed_split("character", character.upper(), CHARACTER_PINS,
                                  CHARACTER_TEST_FRAC, CHARACTER_VAL_FRAC)


def decode(data: bytes, entry: Entry) -> np.ndarray:
    """One speech entry as float64 mono at 16 kHz."""
    try:
        x, sr = sf.read(io.BytesIO(entry.read(data)), dtype="float64",
                        always_2d=False)
    except sf.LibsndfileError as e:
        raise QueenDataError(f"speech entry {entry.name!r} does not decode ({e}); soundfile >= 0.12 "
                             f"with libsndfile >= 1.1 (MP3) is needed") from e
    return resample(to_mono(x), sr)


def find_archive(source) -> Path:
    """queen.1c itself, a folder holding it (dpkg -x output), or the .deb (extracted beside it)."""
    source = Path(source)
    if source.is_file() and source.suffix == ".deb":
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        if digest != DEB_SHA256:
            raise QueenDataError(f"{source.name}: sha256 {digest}, expected {DEB_SHA256} "
                                 f"({DEB_PACKAGE} {DEB_VERSION}); download that version")
        dest = source.with_suffix("")
        if not (dest / ARCHIVE_REL).exists():
            subprocess.run(["dpkg", "-x", str(source), str(dest)], check=True)
        source = dest
    if source.is_dir():
        for cand in (source / ARCHIVE_REL, source / "queen.1c"):
            if cand.exists():
                return cand
        raise QueenDataError(f"no {ARCHIVE_REL} under {source}: run `dpkg -x` on the {DEB_PACKAGE} .deb")
    if not source.exists():
        raise QueenDataError(f"{source} does not exist: `apt-get download {DEB_PACKAGE}` first")
    return source


def extract(source, out_dir, progress: bool = True) -> dict:
    """Write every attributed line to out_dir/clips/<split>/<character>/<stem>.flac (16 kHz) and
    out_dir/clips.csv. Lines without a known speaker are counted, not written."""
    out_dir = Path(out_dir)
    archive = find_archive(source)
    data = archive.read_bytes()
    entries = read_index(data)
    keys = talk_keys(data, entries)
    cut_speakers = cutaway_speakers(data, entries, keys)
    speech = sorted((e for e in entries if e.name.upper().endswith(".SB")), key=lambda e: e.name)
    rows, unattributed, from_cutaways = [], 0, []
    t0 = time.time()
    for i, e in enumerate(speech):
        stem = e.name.rsplit(".", 1)[0]
        character = speaker_of(stem, keys)
        if character is None:
            character = speaker_of_cutaway(stem, cut_speakers)
            if character is None:
                unattributed += 1
                continue
            from_cutaways.append(stem)
        split = split_of_character(character)
        x = decode(data, e)
        rel = f"clips/{split}/{character}/{stem}.flac"
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out_dir / rel), np.clip(x, -1, 1), SR, subtype="PCM_16", format="FLAC")
        rows.append(dict(path=rel, name=stem, speaker=character, split=split,
                         dur_s=round(len(x) / SR, 3)))
        if progress and i % 500 == 0:
            log(f"[queen] {i}/{len(speech)} entries")
    _write_csv(out_dir / "clips.csv", rows, ["path", "name", "speaker", "split", "dur_s"])
    summary = {"archive": str(archive), "speech_entries": len(speech), "clips": len(rows),
               "from_cutaways": len(from_cutaways), "unattributed_skipped": unattributed,
               "seconds": round(time.time() - t0, 1)}
    cut_names = set(from_cutaways)
    cut_rows = [r for r in rows if r["name"] in cut_names]
    for split in SPLITS:
        sel = [r for r in rows if r["split"] == split]
        summary[split] = {"clips": len(sel), "minutes": round(sum(r["dur_s"] for r in sel) / 60, 1),
                          "characters": sorted({r["speaker"] for r in sel})}
        cut_sel = [r for r in cut_rows if r["split"] == split]
        summary[split]["from_cutaways"] = {c: sum(1 for r in cut_sel if r["speaker"] == c)
                                           for c in sorted({r["speaker"] for r in cut_sel})}
    (out_dir / "extract.json").write_text(json.dumps(summary, indent=1) + "\n")
    log(f"[queen] {summary}")
    return summary


def _write_csv(path: Path, rows: list, fields: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _read_transcripts(path: Path) -> dict:
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["path"]] = r
    return done


def transcription_order(rows: list) -> list:
    """Shortest lines first (they hold keywords most often), every split alike, so a partial run
    covers each split in proportion; ties by path."""
    return sorted(rows, key=lambda r: (float(r["dur_s"]), r["path"]))


def transcribe(out_dir, teacher, budget_s: float | None = None, limit: int | None = None) -> dict:
    """Append the teacher's words (text, start_s, end_s, prob) of every line not yet transcribed to
    out_dir/transcripts.jsonl, in ``transcription_order``, until budget_s seconds or limit lines."""
    out_dir = Path(out_dir)
    rows = read_csv(out_dir / "clips.csv")
    path = out_dir / "transcripts.jsonl"
    done = _read_transcripts(path)
    t0, count = time.time(), 0
    with open(path, "a") as f:
        for r in transcription_order(rows):
            if r["path"] in done:
                continue
            if (budget_s is not None and time.time() - t0 > budget_s) or (limit is not None and count >= limit):
                break
            x, _ = sf.read(str(out_dir / r["path"]), dtype="float32")
            words = teacher.words(x)
            f.write(json.dumps({"path": r["path"], "words": words}) + "\n")
            f.flush()
            count += 1
    total = len(_read_transcripts(path))
    summary = {"transcribed_now": count, "transcribed": total, "lines": len(rows),
               "seconds": round(time.time() - t0, 1)}
    log(f"[queen transcribe] {summary}")
    return summary


def normalise(word: str) -> str:
    return re.sub(r"[^a-z']", "", word.lower())


def keywords_in(text_words) -> list:
    return [w for w in (normalise(t) for t in text_words) if w in KEYWORDS]


def confirm_cut(teacher, cut: np.ndarray, keyword: str) -> tuple:
    """The teacher re-transcribes the 1 s cut alone: kept when it hears the keyword and no other one.
    Returns (kept, what it heard)."""
    heard = teacher.text(cut)
    return confirmed(heard, keyword), heard


def confirmed(heard: str, keyword: str) -> bool:
    """The cut's rule: the teacher heard the keyword and no other keyword."""
    found = keywords_in(heard.split())
    return keyword in found and set(found) == {keyword}


def _write_wav(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), to_pcm16(x), SR, subtype="PCM_16", format="WAV")


def _shift_name(shift_s: float) -> str:
    """A shift as a file-name part: +0.2 s -> p200, -0.2 s -> m200."""
    return f"{'p' if shift_s > 0 else 'm'}{round(abs(shift_s) * 1000)}"


def cut(out_dir, teacher, seed: int = 0, shifts_s: tuple = ()) -> dict:
    """Keyword cuts (teacher-confirmed) and _unknown_ windows of every transcribed line into
    out_dir/cuts/<split>/<label>/<stem>_<k>.wav, their rows in out_dir/cuts.csv (rejected cuts too,
    kept=0, not written), and the keyword-free lines in out_dir/talk.csv. Deterministic per seed
    (the teacher is deterministic: greedy decoding).

    `shifts_s` (training split only, validation and test cuts stay as they are): each kept keyword cut
    is also cut with its window moved by each shift (the keyword off centre, as a stream's windows
    hold it), as <stem>_<k>_<p|m><ms>.wav, when the whole word stays inside and the teacher confirms
    it alone as for the centred cut; rows with shift_s, counted apart (`shifted_cuts`)."""
    out_dir = Path(out_dir)
    clips = {r["path"]: r for r in read_csv(out_dir / "clips.csv")}
    transcripts = _read_transcripts(out_dir / "transcripts.jsonl")
    cuts_dir = out_dir / "cuts"
    # the teacher is deterministic: what it heard in an earlier run's cut is reused, not recomputed
    heard_before = {(r["source"], r["word"], r["start_s"]): r["heard"]
                    for r in (read_csv(out_dir / "cuts.csv") if (out_dir / "cuts.csv").exists() else [])
                    if r.get("heard") is not None and r.get("reason") in ("", "not_confirmed")}

    def teacher_verdict(x, rel: str, word: str, start: int):
        """(the 1 s window from `start`, whether the teacher hears `word` alone in it, what it heard)."""
        y = window(x, start)
        key = (rel, word, f"{round(start / SR, 3)}")
        if key in heard_before:
            return y, confirmed(heard_before[key], word), heard_before[key]
        kept, heard = confirm_cut(teacher, y.astype(np.float32), word)
        return y, kept, heard

    if cuts_dir.exists():
        for old in cuts_dir.rglob("*.wav"):
            old.unlink()
    rows, talk = [], []
    for rel in sorted(transcripts):
        clip = clips.get(rel)
        if clip is None:
            continue
        words = transcripts[rel]["words"]
        if not words:  # the teacher heard no words: grunts, laughter, or speech it missed
            continue
        x, _ = sf.read(str(out_dir / rel), dtype="float64")
        stem, split = clip["name"], clip["split"]
        kw_spans = []
        for k, w in enumerate(words):
            word = normalise(w["text"])
            if word not in KEYWORDS:
                continue
            kw_spans.append((w["start_s"], w["end_s"]))
            row = dict(split=split, label=word, speaker=clip["speaker"], source=rel, word=word,
                       word_start_s=w["start_s"], word_end_s=w["end_s"], word_prob=w["prob"])
            length = w["end_s"] - w["start_s"]
            centre = 0.5 * (w["start_s"] + w["end_s"])
            start = int(round((centre - CUT_S / 2) * SR))
            if length > MAX_KEYWORD_S or w["prob"] < MIN_WORD_PROB:
                rows.append(dict(row, kept=0, reason="long" if length > MAX_KEYWORD_S else "low_prob"))
                continue
            y, kept, heard = teacher_verdict(x, rel, word, start)
            row.update(start_s=round(start / SR, 3), heard=heard, kept=int(kept),
                       reason="" if kept else "not_confirmed")
            if kept:
                row["path"] = f"cuts/{split}/{word}/{stem}_{k:02d}.wav"
                _write_wav(out_dir / row["path"], y)
            rows.append(row)
            for shift in (shifts_s if kept and split == "train" else ()):
                moved = start + int(round(shift * SR))
                if w["start_s"] - moved / SR < SHIFT_EDGE_S or moved / SR + CUT_S - w["end_s"] < SHIFT_EDGE_S:
                    continue  # part of the word would leave the window: not this keyword's cut any more
                y, moved_kept, heard = teacher_verdict(x, rel, word, moved)
                shifted = dict(row, path="", start_s=round(moved / SR, 3), heard=heard, kept=int(moved_kept),
                               reason="" if moved_kept else "not_confirmed", shift_s=shift)
                if moved_kept:
                    shifted["path"] = f"cuts/{split}/{word}/{stem}_{k:02d}_{_shift_name(shift)}.wav"
                    _write_wav(out_dir / shifted["path"], y)
                rows.append(shifted)
        if not kw_spans:
            talk.append(dict(path=rel, split=split, speaker=clip["speaker"], dur_s=clip["dur_s"],
                             text=" ".join(w["text"].strip() for w in words)))
        # _unknown_: windows on a grid with a per-line random phase, away from every keyword
        rng = np.random.default_rng([seed, stable_int(stem)])
        phase = float(rng.uniform(0, CUT_S))
        starts = np.arange(phase - CUT_S / 2, len(x) / SR - CUT_S / 2, CUT_S)
        taken = 0
        for s in starts:
            if taken >= UNKNOWN_PER_LINE:
                break
            lo, hi = s - UNKNOWN_MARGIN_S, s + CUT_S + UNKNOWN_MARGIN_S
            if any(a < hi and b > lo for a, b in kw_spans):
                continue
            y = window(x, int(round(s * SR)))
            if float(frame_db(y).max()) < SPEECH_FLOOR_DB:
                continue
            p = f"cuts/{split}/{UNKNOWN}/{stem}_u{taken}.wav"
            _write_wav(out_dir / p, y)
            rows.append(dict(path=p, split=split, label=UNKNOWN, speaker=clip["speaker"], source=rel,
                             start_s=round(float(s), 3), kept=1))
            taken += 1
    fields = ["path", "split", "label", "speaker", "source", "word", "word_start_s", "word_end_s",
              "word_prob", "start_s", "heard", "kept", "reason"] + (["shift_s"] if shifts_s else [])
    _write_csv(out_dir / "cuts.csv", rows, fields)
    _write_csv(out_dir / "talk.csv", talk, ["path", "split", "speaker", "dur_s", "text"])
    summary = cut_summary(rows, talk)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    log(f"[queen cut] {json.dumps(summary)}")
    return summary


def cut_summary(rows: list, talk: list) -> dict:
    s: dict = {"keyword_cuts": {}, "rejected": {}, "unknown": {}, "talk_lines": {}, "speakers": {}}
    shifted = [r for r in rows if r.get("shift_s") not in (None, "")]
    if shifted:
        s["shifted_cuts"] = {split: {k: sum(1 for r in shifted if r["split"] == split and r["label"] == k
                                            and r["kept"]) for k in KEYWORDS} for split in SPLITS}
    rows = [r for r in rows if r.get("shift_s") in (None, "")]
    for split in SPLITS:
        kw = [r for r in rows if r["split"] == split and r["label"] != UNKNOWN]
        s["keyword_cuts"][split] = {k: sum(1 for r in kw if r["label"] == k and r["kept"]) for k in KEYWORDS}
        s["rejected"][split] = {why: sum(1 for r in kw if r.get("reason") == why)
                                for why in ("not_confirmed", "long", "low_prob")}
        s["unknown"][split] = sum(1 for r in rows if r["split"] == split and r["label"] == UNKNOWN)
        s["talk_lines"][split] = sum(1 for t in talk if t["split"] == split)
        s["speakers"][split] = sorted({r["speaker"] for r in rows if r["split"] == split})
    return s


def talk_sources(out_dir, split: str) -> list:
    """[(16 kHz audio, speaker, text)] of `split`'s keyword-free lines (out_dir/talk.csv, written by
    ``cut``): real talk for the _unknown_ words of streams."""
    out_dir = Path(out_dir)
    if not (out_dir / "talk.csv").exists():
        raise QueenDataError(f"no talk.csv in {out_dir}: run `kws.py queen cut {out_dir}` first")
    talk = []
    for r in read_csv(out_dir / "talk.csv"):
        if r["split"] == split:
            x, _ = sf.read(str(out_dir / r["path"]), dtype="float64")
            talk.append((trim_silence(x), f"queen:{r['speaker']}", r["text"]))
    if not talk:
        raise QueenDataError(f"{out_dir / 'talk.csv'} lists no line of split {split!r}: transcribe more "
                             f"(`kws.py queen transcribe {out_dir}`), then cut again")
    return talk


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="kws.py queen", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("extract", help="attributed lines -> OUT/clips/<split>/<character>/*.flac")
    a.add_argument("source", help="the .deb, its dpkg -x folder, or queen.1c")
    a.add_argument("out_dir")
    a = sub.add_parser("transcribe", help="the teacher's words of each line -> OUT/transcripts.jsonl")
    a.add_argument("out_dir")
    a.add_argument("--minutes", type=float, default=None, help="stop after this long (resumable)")
    a.add_argument("--limit", type=int, default=None, help="stop after this many lines")
    a = sub.add_parser("cut", help="teacher-confirmed keyword cuts + _unknown_ windows -> OUT/cuts")
    a.add_argument("out_dir")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--shifts", default="", help="training split: also cut each keyword with the window moved "
                                                "by these seconds, e.g. --shifts=-0.2,0.2 (teacher-confirmed)")
    args = ap.parse_args(argv)
    if args.cmd == "extract":
        extract(args.source, args.out_dir)
        return 0
    from teacher import Teacher

    teacher = Teacher()
    if args.cmd == "transcribe":
        transcribe(args.out_dir, teacher, budget_s=None if args.minutes is None else args.minutes * 60,
                   limit=args.limit)
    else:
        cut(args.out_dir, teacher, seed=args.seed, shifts_s=tuple(float(v) for v in args.shifts.split(",") if v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
