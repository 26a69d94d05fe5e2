package linkui

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"rsc.io/qr"

	"github.com/phonebridge/phonebridge/bridge"
)

// A WhatsApp QR code is a long comma-separated string; these have its shape.
const (
	code1 = "2@kV3xQm9bR1uYp0Zc8Lw4Tn7Ej2Hs6Ga5Df3Ik1Ol9Pq0Rr8Ss,aGVsbG8gcGhvbmVicmlkZ2UgdGVzdA==,bm9pc2Uga2V5IG9uZQ==,YWR2IHNlY3JldCBvbmU="
	code2 = "2@Zz9yXx8wWv7uUt6sSr5qQp4oOn3mMl2kKj1iIh0gGf9eEd8cCb7,c2Vjb25kIGNvZGUgZm9yIHRoZSB0ZXN0,bm9pc2Uga2V5IHR3bw==,YWR2IHNlY3JldCB0d28="
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable now for a Printer.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newPrinter(tty, light bool) (*Printer, *bytes.Buffer, *clock) {
	var buf bytes.Buffer
	c := &clock{t: t0}
	p := New(&buf, tty, light)
	p.now = c.now
	return p, &buf, c
}

// decodeHalfBlocks turns a rendering back into pixels as the eye sees
// them: true is dark. On a dark terminal the drawn halves are light; with
// light, the drawn halves are dark.
func decodeHalfBlocks(t *testing.T, s string, light bool) [][]bool {
	t.Helper()
	var rows [][]bool
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		top, bottom := []bool{}, []bool{}
		for _, r := range line {
			var drawnTop, drawnBottom bool
			switch r {
			case '█':
				drawnTop, drawnBottom = true, true
			case '▀':
				drawnTop = true
			case '▄':
				drawnBottom = true
			case ' ':
			default:
				t.Fatalf("unexpected character %q in the QR code", r)
			}
			top = append(top, drawnTop == light)
			bottom = append(bottom, drawnBottom == light)
		}
		rows = append(rows, top, bottom)
	}
	for i, r := range rows {
		if len(r) != len(rows[0]) {
			t.Fatalf("pixel row %d is %d wide, row 0 is %d", i, len(r), len(rows[0]))
		}
	}
	return rows
}

// findCode returns where the modules of want sit in pixels, or false.
func findCode(pix [][]bool, want *qr.Code) (int, int, bool) {
	for oy := 0; oy+want.Size <= len(pix); oy++ {
	offsets:
		for ox := 0; ox+want.Size <= len(pix[0]); ox++ {
			for y := 0; y < want.Size; y++ {
				for x := 0; x < want.Size; x++ {
					if pix[oy+y][ox+x] != want.Black(x, y) {
						continue offsets
					}
				}
			}
			return ox, oy, true
		}
	}
	return 0, 0, false
}

func TestRenderQRShowsTheEncodedCode(t *testing.T) {
	for _, light := range []bool{false, true} {
		t.Run(fmt.Sprintf("light=%v", light), func(t *testing.T) {
			for _, code := range []string{code1, code2, "x"} {
				want, err := qr.Encode(code, qr.L)
				if err != nil {
					t.Fatal(err)
				}
				out := RenderQR(code, light)
				if strings.Contains(out, "\x1b") {
					t.Fatalf("the code has escape sequences: %q", out)
				}
				pix := decodeHalfBlocks(t, out, light)
				ox, oy, ok := findCode(pix, want)
				if !ok {
					t.Fatalf("the rendering of %.20q… does not hold its %d×%d modules:\n%s", code, want.Size, want.Size, out)
				}
				// A scanner needs a light quiet zone around the code.
				for y := oy - 1; y <= oy+want.Size; y++ {
					for x := ox - 1; x <= ox+want.Size; x++ {
						inside := y >= oy && y < oy+want.Size && x >= ox && x < ox+want.Size
						if inside {
							continue
						}
						if y < 0 || x < 0 || y >= len(pix) || x >= len(pix[0]) {
							t.Fatalf("no quiet zone at pixel (%d,%d):\n%s", x, y, out)
						}
						if pix[y][x] {
							t.Fatalf("quiet zone pixel (%d,%d) is dark:\n%s", x, y, out)
						}
					}
				}
				if light {
					// Beyond the code a light terminal is light: any dark
					// pixel there is a stray mark next to the code.
					for y, row := range pix {
						for x, dark := range row {
							inside := y >= oy && y < oy+want.Size && x >= ox && x < ox+want.Size
							if dark && !inside {
								t.Fatalf("stray dark pixel at (%d,%d) outside the code:\n%s", x, y, out)
							}
						}
					}
				}
			}
		})
	}
}

func TestRenderQRIsDeterministicAndLightInverts(t *testing.T) {
	dark1, dark2 := RenderQR(code1, false), RenderQR(code2, false)
	if dark1 != RenderQR(code1, false) {
		t.Fatal("two renderings of one code differ")
	}
	if dark1 == dark2 {
		t.Fatal("two codes render the same")
	}
	light1 := RenderQR(code1, true)
	dl, ll := strings.Split(dark1, "\n"), strings.Split(light1, "\n")
	if len(dl) != len(ll) {
		t.Fatalf("dark has %d lines, light %d", len(dl), len(ll))
	}
	invert := strings.NewReplacer("█", " ", " ", "█", "▀", "▄", "▄", "▀")
	// The first line is the half line above the quiet zone, which each
	// mode draws as its own background.
	for i := 1; i < len(dl); i++ {
		if got := invert.Replace(dl[i]); got != ll[i] {
			t.Fatalf("line %d: light is not dark inverted:\n dark  %q\n light %q", i, dl[i], ll[i])
		}
	}
	if strings.Trim(ll[0], " ") != "" {
		t.Fatalf("light's first line is not blank: %q", ll[0])
	}
}

// screen is the little of a terminal the Printer relies on: text, "\n"
// (with the tty's CR), cursor up, clear to the end of the screen and clear
// the line. It shows what the user ends up seeing.
type screen struct {
	lines    [][]rune
	row, col int
}

func (s *screen) write(t *testing.T, out string) {
	t.Helper()
	rs := []rune(out)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case r == '\n':
			s.row++
			s.col = 0
		case r == '\x1b':
			if i+1 >= len(rs) || rs[i+1] != '[' {
				t.Fatalf("bare escape at %d in %q", i, out)
			}
			j := i + 2
			for j < len(rs) && rs[j] >= '0' && rs[j] <= '9' {
				j++
			}
			if j >= len(rs) {
				t.Fatalf("unterminated escape in %q", out)
			}
			n := 1
			if j > i+2 {
				n, _ = strconv.Atoi(string(rs[i+2 : j]))
			}
			switch rs[j] {
			case 'A':
				s.row = max(s.row-n, 0)
			case 'J':
				s.grow()
				s.lines[s.row] = s.lines[s.row][:min(s.col, len(s.lines[s.row]))]
				s.lines = s.lines[:s.row+1]
			case 'K':
				if n != 2 {
					t.Fatalf("unexpected erase-line mode %d", n)
				}
				s.grow()
				s.lines[s.row] = s.lines[s.row][:0]
			default:
				t.Fatalf("unexpected escape %q", string(rs[i:j+1]))
			}
			i = j
		default:
			s.grow()
			line := s.lines[s.row]
			for len(line) < s.col {
				line = append(line, ' ')
			}
			if s.col < len(line) {
				line[s.col] = r
			} else {
				line = append(line, r)
			}
			s.lines[s.row] = line
			s.col++
		}
	}
}

func (s *screen) grow() {
	for len(s.lines) <= s.row {
		s.lines = append(s.lines, nil)
	}
}

// text is the screen with the cursor's empty last line dropped.
func (s *screen) text() string {
	var b strings.Builder
	for i, l := range s.lines {
		if i == len(s.lines)-1 && len(l) == 0 {
			break
		}
		b.WriteString(string(l))
		b.WriteByte('\n')
	}
	return b.String()
}

const steps = "WhatsApp → Settings → Linked devices → Link a device"

func qrProgress(code string, valid time.Duration) bridge.LinkProgress {
	return bridge.LinkProgress{Kind: bridge.ProgressQR, QR: code, Expires: t0.Add(valid)}
}

func TestQRRedrawnInPlaceOnATerminal(t *testing.T) {
	p, buf, _ := newPrinter(true, false)
	p.Progress(qrProgress(code1, 20*time.Second))
	first := buf.String()
	if !strings.Contains(first, "Settings → Linked devices → Link a device") || !strings.Contains(first, "Open WhatsApp on your phone") {
		t.Fatalf("no instructions for the phone:\n%s", first)
	}
	if !strings.Contains(first, RenderQR(code1, false)) {
		t.Fatalf("the first code is not shown:\n%s", first)
	}
	if !strings.Contains(first, "valid for 20s") {
		t.Fatalf("no countdown:\n%s", first)
	}
	intro := first[:strings.Index(first, RenderQR(code1, false))]
	blockLines := strings.Count(first[len(intro):], "\n")

	buf.Reset()
	p.Progress(qrProgress(code2, 19*time.Second))
	second := buf.String()
	// Up over exactly the previous block, then clear below.
	wantPrefix := fmt.Sprintf("\x1b[%dA\x1b[J", blockLines)
	if !strings.HasPrefix(second, wantPrefix) {
		t.Fatalf("the new code does not start with %q:\n%q", wantPrefix, second[:min(len(second), 40)])
	}
	if strings.Contains(second, "Open WhatsApp") {
		t.Fatal("the instructions were printed again")
	}

	var s screen
	s.write(t, first+second)
	want := intro + RenderQR(code2, false) + "Waiting for the phone… this code is valid for 19s; a new one replaces it.\n"
	if got := s.text(); got != want {
		t.Fatalf("the screen shows:\n%s\nwant:\n%s", got, want)
	}
}

func TestQRAppendedWithASeparatorWhenNotATerminal(t *testing.T) {
	p, buf, c := newPrinter(false, false)
	p.Progress(qrProgress(code1, 20*time.Second))
	c.add(5 * time.Second)
	p.Tick() // no countdown rewrites in a log
	p.Progress(qrProgress(code2, 20*time.Second))
	out := buf.String()
	if strings.Contains(out, "\x1b") {
		t.Fatalf("escape sequences in a non-terminal:\n%q", out)
	}
	if n := strings.Count(out, "Link a device"); n != 1 {
		t.Fatalf("the instructions appear %d times, want once:\n%s", n, out)
	}
	i1, i2 := strings.Index(out, RenderQR(code1, false)), strings.Index(out, RenderQR(code2, false))
	if i1 < 0 || i2 < 0 {
		t.Fatalf("both codes must be in the output:\n%s", out)
	}
	between := out[i1+len(RenderQR(code1, false)) : i2]
	if !strings.Contains(between, "(valid for 20s; a new code follows if it expires)\n") {
		t.Fatalf("no validity after the first code: %q", between)
	}
	if !strings.Contains(between, replacedSeparator) {
		t.Fatalf("no separator between the codes: %q", between)
	}
	if strings.Contains(out[:i1], replacedSeparator) {
		t.Fatal("a separator before the first code")
	}
}

func TestTickCountsDownOnATerminal(t *testing.T) {
	p, buf, c := newPrinter(true, false)
	p.Progress(qrProgress(code1, 20*time.Second))
	var s screen
	s.write(t, buf.String())
	buf.Reset()

	c.add(400 * time.Millisecond)
	p.Tick()
	if buf.Len() != 0 {
		t.Fatalf("Tick wrote %q while the shown seconds did not change", buf.String())
	}
	c.add(time.Second)
	p.Tick()
	if want := "\x1b[1A\x1b[2KWaiting for the phone… this code is valid for 19s; a new one replaces it.\n"; buf.String() != want {
		t.Fatalf("Tick wrote %q, want %q", buf.String(), want)
	}
	s.write(t, buf.String())
	buf.Reset()
	c.add(time.Minute)
	p.Tick()
	s.write(t, buf.String())
	buf.Reset()

	lines := strings.Split(strings.TrimSuffix(s.text(), "\n"), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, "valid for 0s") {
		t.Fatalf("the last line is %q, want the countdown at 0s", last)
	}
	if n := strings.Count(s.text(), "Waiting for the phone"); n != 1 {
		t.Fatalf("%d countdown lines on the screen, want 1:\n%s", n, s.text())
	}
	if !strings.Contains(s.text(), RenderQR(code1, false)) {
		t.Fatalf("the ticks damaged the code:\n%s", s.text())
	}

	p.Linked("me", bridge.LinkAccount{Handle: "+15551234567"}, true)
	buf.Reset()
	c.add(3 * time.Second)
	p.Tick()
	if buf.Len() != 0 {
		t.Fatalf("Tick wrote %q after linking", buf.String())
	}
}

func TestPairingCode(t *testing.T) {
	for _, tty := range []bool{false, true} {
		t.Run(fmt.Sprintf("tty=%v", tty), func(t *testing.T) {
			p, buf, _ := newPrinter(tty, false)
			p.Progress(bridge.LinkProgress{Kind: bridge.ProgressPairingCode, PairingCode: "ABCDEFGH", Expires: t0.Add(3 * time.Minute)})
			out := buf.String()
			validity := "(valid for 180s)\n"
			if tty {
				validity = "Waiting for the phone… this code is valid for 180s.\n"
			}
			for _, want := range []string{
				"Settings → Linked devices → Link a device → Link with phone number instead",
				"\n      ABCD-EFGH\n",
				validity,
			} {
				if !strings.Contains(out, want) {
					t.Errorf("missing %q in:\n%s", want, out)
				}
			}
			// WhatsApp never replaces a pairing code.
			if strings.Contains(out, "new") {
				t.Errorf("a new pairing code is promised:\n%s", out)
			}
			if strings.Contains(out, "█") {
				t.Error("a QR code with a pairing code")
			}
		})
	}
	if got := formatPairingCode("WXYZ-1234"); got != "WXYZ-1234" {
		t.Errorf("an already formatted code became %q", got)
	}
}

func TestInfoLinesStayAndTheNextCodeFollowsThem(t *testing.T) {
	p, buf, _ := newPrinter(true, false)
	p.Progress(qrProgress(code1, 20*time.Second))
	p.Progress(bridge.LinkProgress{Kind: bridge.ProgressWaiting, Reason: bridge.ReasonNetworkDown, Cause: "no route to host"})
	p.Progress(qrProgress(code2, 20*time.Second))
	var s screen
	s.write(t, buf.String())
	if !strings.Contains(s.text(), "Cannot reach WhatsApp's servers (no route to host); retrying with backoff. Check the network, or press Ctrl-C to stop.\n") {
		t.Fatalf("a redraw erased the info line:\n%s", s.text())
	}
}

func TestLinked(t *testing.T) {
	acct := bridge.LinkAccount{ID: "15551234567@s.whatsapp.net", Handle: "+15551234567", Name: "Ann", Device: "android"}
	for _, tc := range []struct {
		running bool
		want    string
	}{
		{true, "phonebridge is relaying it now."},
		{false, "Start phonebridge (`phonebridge run`) to relay it."},
	} {
		p, buf, _ := newPrinter(true, false)
		p.Progress(qrProgress(code1, 20*time.Second))
		p.Linked("me", acct, tc.running)
		var s screen
		s.write(t, buf.String())
		got := s.text()
		if !strings.Contains(got, "Linked me to +15551234567 (Ann) on android.\n"+tc.want+"\n") {
			t.Errorf("running=%v: the screen shows:\n%s", tc.running, got)
		}
		if strings.Contains(got, "█") || strings.Contains(got, "Waiting for the phone") {
			t.Errorf("running=%v: the dead code stays on the screen:\n%s", tc.running, got)
		}
	}

	p, buf, _ := newPrinter(false, false)
	p.Linked("me", bridge.LinkAccount{Handle: "+15551234567"}, false)
	if !strings.HasPrefix(buf.String(), "Linked me to +15551234567.\n") {
		t.Errorf("without push name and platform: %q", buf.String())
	}
}

func TestFailedIsOneClearLine(t *testing.T) {
	for _, tc := range []struct {
		err  *bridge.LinkError
		want string
	}{
		{&bridge.LinkError{Reason: bridge.LinkTimedOut, Service: "WhatsApp"}, "not linked: timed out: no phone scanned the code; try again"},
		{&bridge.LinkError{Reason: bridge.LinkNoMultidevice, Service: "WhatsApp"}, "not linked: the code was scanned by a WhatsApp without linked-device support; update WhatsApp on the phone"},
		{&bridge.LinkError{Reason: bridge.LinkOutdated, Service: "WhatsApp"}, "not linked: WhatsApp refused this client as outdated; update phonebridge"},
		{&bridge.LinkError{Reason: bridge.LinkCancelled}, "not linked: cancelled with Ctrl-C"},
		{&bridge.LinkError{Reason: bridge.LinkShuttingDown}, "not linked: cancelled: phonebridge is stopping"},
		{&bridge.LinkError{Reason: bridge.LinkAlreadyLinked, Service: "WhatsApp", Account: &bridge.LinkAccount{Handle: "+15551234567", Name: "Ann"}}, "not linked: already linked to +15551234567 (Ann); run `phonebridge unlink me` first to link another account"},
		{&bridge.LinkError{Reason: bridge.LinkBusy}, "not linked: another process is driving this link"},
		{&bridge.LinkError{Reason: bridge.LinkFailed, Cause: "bad\nthings"}, "not linked: bad; things"},
		{&bridge.LinkError{Reason: bridge.LinkFailed}, "not linked: linking failed"},
		{&bridge.LinkError{Reason: bridge.LinkNetworkDown, Service: "WhatsApp", Cause: "dial tcp: no route"}, "not linked: cannot reach WhatsApp's servers (dial tcp: no route); check the network"},
		{&bridge.LinkError{Reason: bridge.LinkCodeExpired, Service: "WhatsApp"}, "not linked: the pairing code expired before the phone accepted it (typed wrong, or not at all); try again for a new code"},
	} {
		err := Failed("me", fmt.Errorf("wrapped: %w", tc.err))
		if err.Error() != tc.want {
			t.Errorf("%s:\n got  %q\n want %q", tc.err.Reason, err.Error(), tc.want)
		}
		var le *bridge.LinkError
		if !errors.As(err, &le) || le != tc.err {
			t.Errorf("%s: the LinkError is not reachable", tc.err.Reason)
		}
	}
	other := errors.New(`no link called "x"; ` + "`phonebridge links` lists them")
	if Failed("x", other) != other {
		t.Error("an error that is not a LinkError was changed")
	}
}

func TestUnlinkFailedSpeaksOfUnlinking(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&bridge.LinkError{Reason: bridge.LinkNotLinked}, "not unlinked: me is not linked"},
		{&bridge.LinkError{Reason: bridge.LinkNetworkDown, Service: "WhatsApp", Cause: "dial failed"}, "not unlinked: cannot reach WhatsApp's servers (dial failed); check the network; `phonebridge unlink me --local` forgets the keys here only (the phone keeps listing the device until you remove it there)"},
		{&bridge.LinkError{Reason: bridge.LinkLogoutFailed, Cause: "500"}, "not unlinked: the logout did not go through (500); `phonebridge unlink me --local` forgets the keys here only (the phone keeps listing the device until you remove it there)"},
		{&bridge.LinkError{Reason: bridge.LinkBusy}, "not unlinked: another process is driving this link"},
	} {
		if got := UnlinkFailed("me", tc.err).Error(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

func TestTickFromATickerWhileProgressRuns(t *testing.T) {
	// A plain buffer: -race reports any write outside the Printer's lock.
	p, buf, c := newPrinter(true, false)

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				c.add(100 * time.Millisecond)
				p.Tick()
			}
		}
	}()
	codes := []string{code1, code2}
	for i := range 200 {
		p.Progress(bridge.LinkProgress{Kind: bridge.ProgressQR, QR: codes[i%2], Expires: c.now().Add(20 * time.Second)})
	}
	close(stop)
	<-done

	var s screen
	s.write(t, buf.String())
	got := s.text()
	if !strings.Contains(got, RenderQR(codes[199%2], false)+"Waiting for the phone") {
		t.Fatalf("the screen does not end with the last code and its countdown:\n%s", got)
	}
	if n := strings.Count(got, "Waiting for the phone"); n != 1 {
		t.Fatalf("%d countdown lines on the screen, want 1:\n%s", n, got)
	}
	if n := strings.Count(got, "Open WhatsApp"); n != 1 {
		t.Fatalf("the instructions show %d times:\n%s", n, got)
	}
}
