// Package qrscan decodes QR codes the way a phone camera would, so tests
// can prove that what the user is shown really scans: a code printed in a
// terminal with half blocks, or an image. It knows nothing of the encoders
// we use beyond the four characters a half-block terminal code is drawn
// with; the decoding is gozxing's (a port of ZXing), a reader written
// independently of rsc.io/qr and qrterminal.
package qrscan

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif" // codes may be posted as any of these
	_ "image/jpeg"
	_ "image/png"
	"strings"
	"unicode/utf8"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
)

// ErrNoCode says the text has nothing that looks like a QR code.
var ErrNoCode = errors.New("qrscan: no QR code in the text")

// FromTerminal returns the contents of the last complete QR code in text,
// a terminal transcript: the one on screen after a code was redrawn.
func FromTerminal(text string) (string, error) {
	codes, err := AllFromTerminal(text)
	if err != nil {
		return "", err
	}
	return codes[len(codes)-1], nil
}

// AllFromTerminal returns the contents of every QR code in text, in order.
//
// A code is a run of lines of half-block characters; each character is two
// modules, its upper and lower half. A code that does not decode is an
// error, so a damaged code never passes unnoticed, except for a last one
// that nothing follows: the text may be cut while it was being drawn.
func AllFromTerminal(text string) ([]string, error) {
	blocks := findBlocks(splitScreenLines(text))
	if len(blocks) == 0 {
		return nil, ErrNoCode
	}
	var codes []string
	for i, b := range blocks {
		code, err := decodeBlock(b.lines)
		if err != nil {
			if i == len(blocks)-1 && !b.followed && len(codes) > 0 {
				break
			}
			return nil, fmt.Errorf("qrscan: code %d of %d (line %d) does not scan: %w", i+1, len(blocks), b.first+1, err)
		}
		codes = append(codes, code)
	}
	return codes, nil
}

// FromImage returns the contents of the QR code in a PNG, JPEG or GIF
// image, read as it is, with no margin added. Transparency counts as
// white. ZXing reads a code that runs to the image's edge, so this does
// not prove the image has a quiet zone.
func FromImage(data []byte) (string, error) {
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("qrscan: %w", err)
	}
	code, err := decodeImage(img)
	if err == nil {
		return code, nil
	}
	// ZXing misjudges some valid codes at some sizes (see scales): seen
	// as a camera from nearer or farther, the image is read at others.
	for _, r := range resizes {
		if c, rerr := decodeImage(resized(img, r[0], r[1])); rerr == nil {
			return c, nil
		}
	}
	return "", fmt.Errorf("qrscan: image does not scan: %w", err)
}

// resizes are the sizes, as num/den of the image's, an image is read at
// when it does not scan as it is.
var resizes = [][2]int{{1, 2}, {1, 3}, {2, 1}, {1, 4}, {2, 3}}

// resized is img scaled by num/den, nearest pixel, in grey.
func resized(img image.Image, num, den int) image.Image {
	b := img.Bounds()
	w, h := max(1, b.Dx()*num/den), max(1, b.Dy()*num/den)
	out := image.NewGray(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := img.At(b.Min.X+(x*den+den/2)/num, b.Min.Y+(y*den+den/2)/num)
			if _, _, _, a := c.RGBA(); a == 0 {
				c = color.White // transparency counts as white
			}
			out.Set(x, y, c)
		}
	}
	return out
}

// A terminal draws a half-block character's glyph (its "ink") in the
// foreground colour over the background. Which of the two is dark depends
// on the terminal's theme, so the decoder tries both.
var halves = map[rune][2]bool{ // upper, lower half inked
	' ': {false, false},
	'▀': {true, false},
	'▄': {false, true},
	'█': {true, true},
}

// The smallest QR code, version 1, is 21 modules square: fewer lines or
// columns are some other use of block characters (a rule, a progress bar).
const (
	minModules = 21
	minLines   = (minModules + 1) / 2
)

// screenLine is a line of a transcript without its escape sequences.
type screenLine struct {
	text  []rune
	moved bool // drawn after moving the cursor: not below the line before
}

// splitScreenLines splits text into lines, dropping ANSI escape sequences.
// A sequence that may move the cursor (e.g. up over an old code, to draw a
// new one) starts a new line, marked as moved, so that a code drawn right
// over another never joins it into one taller picture.
func splitScreenLines(text string) []screenLine {
	var lines []screenLine
	cur := screenLine{}
	newLine := func(moved bool) {
		lines = append(lines, cur)
		cur = screenLine{moved: moved}
	}
	moveTo := func() {
		if len(cur.text) == 0 {
			cur.moved = true
		} else {
			newLine(true)
		}
	}
	// A transcript read from a pipe mid-write may end inside a character.
	for range utf8.UTFMax - 1 {
		if r, n := utf8.DecodeLastRuneInString(text); r != utf8.RuneError || n != 1 {
			break
		}
		text = text[:len(text)-1]
	}
	rs := []rune(text)
	for i := 0; i < len(rs); i++ {
		switch r := rs[i]; r {
		case '\n':
			newLine(false)
		case '\r':
			if i+1 < len(rs) && rs[i+1] == '\n' {
				continue // CRLF ends a line like LF
			}
			moveTo() // a lone CR overwrites the line from its start
		case '\x1b':
			n, moves := escapeLen(rs[i:])
			i += n - 1
			if moves {
				moveTo()
			}
		default:
			cur.text = append(cur.text, r)
		}
	}
	if len(cur.text) > 0 || cur.moved {
		lines = append(lines, cur)
	}
	return lines
}

// escapeLen returns the length of the escape sequence at the start of rs
// and whether it may move the cursor. Only colour changes (SGR) and
// erasures leave the cursor in place; anything unknown is taken to move it.
func escapeLen(rs []rune) (n int, moves bool) {
	if len(rs) < 2 {
		return len(rs), false
	}
	switch rs[1] {
	case '[': // CSI: parameters and intermediates, then a final byte
		for j := 2; j < len(rs); j++ {
			if rs[j] >= 0x40 && rs[j] <= 0x7e {
				return j + 1, !strings.ContainsRune("mKJ", rs[j])
			}
		}
		return len(rs), false
	case ']', 'P', '_', '^', 'X': // strings (OSC, DCS…) end with BEL or ST
		for j := 2; j < len(rs); j++ {
			if rs[j] == '\a' {
				return j + 1, false
			}
			if rs[j] == '\x1b' && j+1 < len(rs) && rs[j+1] == '\\' {
				return j + 2, false
			}
		}
		return len(rs), false
	}
	return 2, true // ESC 7, ESC 8, ESC M and the like
}

// block is a run of lines that may be a QR code.
type block struct {
	lines    [][]rune
	first    int  // index of its first line, for messages
	followed bool // more text follows it: it was drawn completely
}

// findBlocks returns the runs of half-block lines big enough to be a code.
func findBlocks(lines []screenLine) []block {
	var blocks []block
	for i := 0; i < len(lines); {
		if !isBlockLine(lines[i].text) {
			i++
			continue
		}
		b := block{first: i}
		for i < len(lines) && isBlockLine(lines[i].text) && (i == b.first || !lines[i].moved) {
			b.lines = append(b.lines, lines[i].text)
			i++
		}
		if len(b.lines) < minLines || maxWidth(b.lines) < minModules {
			continue
		}
		for _, l := range lines[i:] {
			b.followed = b.followed || strings.TrimSpace(string(l.text)) != ""
		}
		blocks = append(blocks, b)
	}
	return blocks
}

// isBlockLine says line is made of half blocks alone. A line of spaces
// is left out: in the dark-terminal set it would be all dark, which no
// code line is; in the light set it is quiet zone, like the background
// render draws around the block.
func isBlockLine(line []rune) bool {
	inked := false
	for _, r := range line {
		if _, ok := halves[r]; !ok {
			return false
		}
		inked = inked || r != ' '
	}
	return inked
}

func maxWidth(lines [][]rune) int {
	w := 0
	for _, l := range lines {
		w = max(w, len(l))
	}
	return w
}

// decodeBlock decodes lines of half blocks, trying ink as dark (a light
// terminal) and then ink as light (a dark terminal). A code read with the
// wrong colours has no finder patterns, so at most one way decodes.
func decodeBlock(lines [][]rune) (string, error) {
	ink := inkMatrix(lines)
	var errs [2]error
	for i, inkDark := range []bool{true, false} {
		for _, s := range scales {
			code, err := decodeImage(render(ink, inkDark, s))
			if err == nil {
				return code, nil
			}
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	return "", fmt.Errorf("as dark on light: %w; as light on dark: %w", errs[0], errs[1])
}

// inkMatrix turns lines into module rows, two per line. A short line is
// padded with spaces, the background a terminal shows past its end.
func inkMatrix(lines [][]rune) [][]bool {
	w := maxWidth(lines)
	m := make([][]bool, 0, 2*len(lines))
	for _, l := range lines {
		upper, lower := make([]bool, w), make([]bool, w)
		for x, r := range l {
			h := halves[r]
			upper[x], lower[x] = h[0], h[1]
		}
		m = append(m, upper, lower)
	}
	return m
}

// Each module becomes scale×scale pixels, as a camera sees a code on a
// screen: sharp, at whatever size the phone holds it. ZXing's detector
// misjudges the module size of some valid codes at some scales (seen: a
// code read at 1 and 2 pixels a module, not at 3 to 8), as one camera
// distance can fail where another reads, so each is tried at a few.
// Around the block go margin modules of the terminal's background, dark
// on a dark terminal: the code must carry its own light quiet zone, as on
// the screen, rather than get one from us.
var scales = []int{4, 2, 1, 6}

const margin = 4

// render draws the modules of ink at scale, inked ones dark if inkDark,
// the rest and the margin in the other colour.
func render(ink [][]bool, inkDark bool, scale int) image.Image {
	h, w := len(ink), len(ink[0])
	img := image.NewGray(image.Rect(0, 0, (w+2*margin)*scale, (h+2*margin)*scale))
	for y := range h + 2*margin {
		for x := range w + 2*margin {
			inked := y >= margin && y < h+margin && x >= margin && x < w+margin &&
				ink[y-margin][x-margin]
			c := color.Gray{Y: 0xff}
			if inked == inkDark {
				c = color.Gray{}
			}
			for py := range scale {
				for px := range scale {
					img.SetGray(x*scale+px, y*scale+py, c)
				}
			}
		}
	}
	return img
}

// decodeHints reads byte-mode text as UTF-8, as phones do, rather than
// letting ZXing guess a legacy encoding.
var decodeHints = map[gozxing.DecodeHintType]any{
	gozxing.DecodeHintType_CHARACTER_SET: "UTF-8",
}

func decodeImage(img image.Image) (string, error) {
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		return "", err
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, decodeHints)
	if err != nil {
		return "", err
	}
	return res.GetText(), nil
}
