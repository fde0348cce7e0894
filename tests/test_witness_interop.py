"""Interop: a head cosigned by `ledger witness serve` verifies with Go.

A tiny Go program checks the log's signature with golang.org/x/mod/sumdb/note (Debian's
golang-golang-x-mod-dev source under /usr/share/gocode, built in GOPATH mode with GOPROXY=off, so
nothing is downloaded) and the cosignature/v1 lines with a verifier written here from the C2SP
tlog-cosignature text alone, on crypto/ed25519. Skipped, not failed, where Go or the package is
missing (`apt-get install golang-go golang-golang-x-mod-dev`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ledger.spec.keys import SigningKey
from ledger.spec.note import (
    Cosignature,
    TreeHead,
    add_signatures,
    cosign,
    sign_tree_head,
    vkey,
    witness_vkey,
)

GOCODE = Path("/usr/share/gocode")
NOTE_PACKAGE = GOCODE / "src" / "golang.org" / "x" / "mod" / "sumdb" / "note" / "note.go"
LEDGER = str(Path(sys.executable).with_name("ledger"))

pytestmark = pytest.mark.skipif(
    shutil.which("go") is None or not NOTE_PACKAGE.exists(),
    reason="needs Debian's golang-go and golang-golang-x-mod-dev",
)

VERIFY_GO = r"""
// verify: check a cosigned checkpoint. Usage: verify NOTE_FILE LOG_VKEY WITNESS_VKEY...
// The log signature goes through golang.org/x/mod/sumdb/note; cosignature/v1 lines are checked
// here as C2SP tlog-cosignature describes them. Prints one line per valid cosignature; exit 1
// when the log signature fails or a witness has no valid cosignature.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

func fail(format string, args ...interface{}) {
	fmt.Printf(format+"\n", args...)
	os.Exit(1)
}

func main() {
	msg, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail("read: %v", err)
	}
	logVerifier, err := note.NewVerifier(os.Args[2])
	if err != nil {
		fail("log vkey: %v", err)
	}
	n, err := note.Open(msg, note.VerifierList(logVerifier))
	if err != nil {
		fail("log signature: %v", err)
	}
	fmt.Printf("log %s signed\n", n.Sigs[0].Name)

	split := bytes.LastIndex(msg, []byte("\n\n"))
	text, sigs := msg[:split+1], string(msg[split+2:])
	for _, wkey := range os.Args[3:] {
		parts := strings.SplitN(wkey, "+", 3)
		raw, err := base64.StdEncoding.DecodeString(parts[2])
		if err != nil || len(raw) != 33 || raw[0] != 0x04 {
			fail("witness vkey %q: not an Ed25519 cosignature key", wkey)
		}
		h := sha256.New()
		h.Write([]byte(parts[0] + "\n"))
		h.Write(raw)
		id := h.Sum(nil)[:4]
		if fmt.Sprintf("%x", id) != parts[1] {
			fail("witness vkey %q: key id mismatch", wkey)
		}
		found := false
		for _, line := range strings.Split(strings.TrimSuffix(sigs, "\n"), "\n") {
			fields := strings.SplitN(strings.TrimPrefix(line, "\u2014 "), " ", 2)
			if len(fields) != 2 || fields[0] != parts[0] {
				continue
			}
			sig, err := base64.StdEncoding.DecodeString(fields[1])
			if err != nil || len(sig) != 4+8+64 || !bytes.Equal(sig[:4], id) {
				continue
			}
			ts := binary.BigEndian.Uint64(sig[4:12])
			signed := append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", ts)), text...)
			if ed25519.Verify(ed25519.PublicKey(raw[1:]), signed, sig[12:]) {
				fmt.Printf("cosigned %s %d\n", parts[0], ts)
				found = true
			}
		}
		if !found {
			fail("no valid cosignature by %s", parts[0])
		}
	}
}
"""


@pytest.fixture(scope="module")
def go_verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("go")
    (work / "verify.go").write_text(VERIFY_GO)
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": str(GOCODE),
        "GOPROXY": "off",
        "GOFLAGS": "",
        "GOCACHE": str(work / "cache"),
        "CGO_ENABLED": "0",
    }
    build = subprocess.run(
        ["go", "build", "-o", str(work / "verify"), str(work / "verify.go")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    return work / "verify"


LOG_KEY = SigningKey.from_seed(bytes([3]) * 32)
HEAD = TreeHead("example.org/ledger", 42, bytes(range(32)))


def run_go(verifier: Path, note: str, tmp_path: Path, *witness_vkeys: str) -> tuple[int, str]:
    path = tmp_path / "note.txt"
    path.write_text(note, encoding="utf-8")
    result = subprocess.run(
        [str(verifier), str(path), vkey(HEAD.origin, LOG_KEY.public), *witness_vkeys],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout


def test_a_head_cosigned_by_a_served_witness_verifies_in_go(
    go_verifier: Path, tmp_path: Path
) -> None:
    witness_vkeys = []
    lines = []
    for number in (1, 2):
        directory = tmp_path / f"w{number}"
        printed = subprocess.run(
            [LEDGER, "witness", "init", "--name", f"witness.example/w{number}", "--out",
             str(directory)],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        witness_vkeys.append(printed)
        proc = subprocess.Popen(
            [LEDGER, "witness", "serve", "--key", str(directory / "witness.pem"), "--log",
             vkey(HEAD.origin, LOG_KEY.public), "--state", str(directory / "state.json"),
             "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[-1]
            body = f"old 0\n\n{sign_tree_head(HEAD, LOG_KEY)}".encode()
            with urllib.request.urlopen(f"{url}/add-checkpoint", data=body, timeout=30) as answer:
                lines.append(answer.read().decode())
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            proc.communicate()
    cosigned = add_signatures(sign_tree_head(HEAD, LOG_KEY), lines)
    code, out = run_go(go_verifier, cosigned, tmp_path, *witness_vkeys)
    assert code == 0, out
    assert out.splitlines()[0] == "log example.org/ledger signed"
    assert [line.split()[1] for line in out.splitlines()[1:]] == [
        "witness.example/w1",
        "witness.example/w2",
    ]


def test_go_refuses_a_tampered_cosignature_and_a_missing_one(
    go_verifier: Path, tmp_path: Path
) -> None:
    witness = SigningKey.from_seed(bytes([4]) * 32)
    wvkey = witness_vkey("w.example", witness.public)
    good = cosign(sign_tree_head(HEAD, LOG_KEY), witness, "w.example", 1700000000)
    note = sign_tree_head(HEAD, LOG_KEY)
    code, out = run_go(go_verifier, add_signatures(note, [good.line()]), tmp_path, wvkey)
    assert (code, out.splitlines()[-1]) == (0, "cosigned w.example 1700000000")
    shifted = Cosignature(good.name, good.key_id, good.time + 1, good.signature)
    code, out = run_go(go_verifier, add_signatures(note, [shifted.line()]), tmp_path, wvkey)
    assert code == 1 and "no valid cosignature" in out
    code, out = run_go(go_verifier, note, tmp_path, wvkey)
    assert code == 1 and "no valid cosignature" in out
    # a head the log never signed fails in sumdb/note itself
    other = sign_tree_head(HEAD, SigningKey.from_seed(bytes([5]) * 32))
    code, out = run_go(go_verifier, add_signatures(other, [good.line()]), tmp_path, wvkey)
    assert code == 1 and out.startswith("log signature:")
