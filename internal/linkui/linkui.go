// Package linkui prints linking progress in a terminal: the QR code to
// scan, replaced in place as WhatsApp rotates it, with a countdown; or the
// pairing code to type; then who was linked, or why not.
package linkui

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mdp/qrterminal/v3"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/linktext"
)

// service is the platform these instructions are for.
const service = "WhatsApp"

// Printer prints one linking session.
type Printer struct {
	w     io.Writer
	tty   bool // redraw in place with ANSI escapes
	light bool // dark modules on a light background
	now   func() time.Time

	mu       sync.Mutex
	intro    bool
	drawn    int  // lines of the last code block, to redraw over
	codes    int  // code blocks shown so far
	rotates  bool // the code shown is a QR code, which WhatsApp replaces
	expires  time.Time
	lastLeft int
}

// New returns a Printer writing to w; tty says w is a terminal.
func New(w io.Writer, tty, light bool) *Printer {
	return &Printer{w: w, tty: tty, light: light, now: time.Now}
}

const (
	qrSteps = `Link phonebridge to your WhatsApp account:
  1. Open WhatsApp on your phone.
  2. Go to Settings → Linked devices → Link a device.
  3. Point the phone at this code.
`
	codeSteps = `Link phonebridge to your WhatsApp account:
  1. Open WhatsApp on your phone.
  2. Go to Settings → Linked devices → Link a device → Link with phone number instead.
  3. Type this code:
`
)

// Progress shows one step of linking.
func (p *Printer) Progress(pr bridge.LinkProgress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch pr.Kind {
	case bridge.ProgressQR:
		if !p.intro {
			fmt.Fprint(p.w, qrSteps)
			p.intro = true
		}
		block := RenderQR(pr.QR, p.light)
		p.expires, p.rotates = pr.Expires, true
		p.redraw(block + p.countdown() + "\n")
	case bridge.ProgressPairingCode:
		if !p.intro {
			fmt.Fprint(p.w, codeSteps)
			p.intro = true
		}
		p.expires, p.rotates = pr.Expires, false
		p.redraw("\n      " + formatPairingCode(pr.PairingCode) + "\n\n" + p.countdown() + "\n")
	case bridge.ProgressWaiting:
		fmt.Fprintln(p.w, linktext.CLI.Waiting(service, pr))
		p.drawn = 0
	}
}

// Tick updates the countdown; call it every second while linking. It
// writes only on a terminal, and only when the shown seconds change.
func (p *Printer) Tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.tty || p.drawn == 0 || p.expires.IsZero() {
		return
	}
	left := p.secondsLeft()
	if left == p.lastLeft {
		return
	}
	// Rewrite only the countdown, the block's last line.
	fmt.Fprintf(p.w, "\x1b[1A\x1b[2K%s\n", p.countdown())
}

func (p *Printer) secondsLeft() int {
	left := int(p.expires.Sub(p.now()).Round(time.Second) / time.Second)
	return max(left, 0)
}

func (p *Printer) countdown() string {
	if p.expires.IsZero() {
		return ""
	}
	p.lastLeft = p.secondsLeft()
	// A pairing code is never replaced: promising a new one would leave
	// the user waiting for it.
	switch {
	case p.tty && p.rotates:
		return fmt.Sprintf("Waiting for the phone… this code is valid for %ds; a new one replaces it.", p.lastLeft)
	case p.tty:
		return fmt.Sprintf("Waiting for the phone… this code is valid for %ds.", p.lastLeft)
	case p.rotates:
		return fmt.Sprintf("(valid for %ds; a new code follows if it expires)", p.lastLeft)
	}
	return fmt.Sprintf("(valid for %ds)", p.lastLeft)
}

// replacedSeparator goes between codes where they cannot be redrawn in
// place (a log, a pipe), so a reader knows the earlier one is dead.
const replacedSeparator = "--- a new code replaces the one above ---\n"

// redraw replaces the last block on a terminal; elsewhere it appends.
func (p *Printer) redraw(block string) {
	switch {
	case p.tty && p.drawn > 0:
		fmt.Fprintf(p.w, "\x1b[%dA\x1b[J", p.drawn)
	case !p.tty && p.codes > 0:
		fmt.Fprint(p.w, replacedSeparator)
	}
	fmt.Fprint(p.w, block)
	p.drawn = strings.Count(block, "\n")
	p.codes++
}

// Linked reports success. running says the daemon relays the link now.
func (p *Printer) Linked(name string, acct bridge.LinkAccount, running bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA\x1b[J", p.drawn)
	}
	p.drawn = 0
	who := acct.String()
	if acct.Device != "" {
		who += " on " + acct.Device
	}
	fmt.Fprintf(p.w, "Linked %s to %s.\n", name, who)
	if running {
		fmt.Fprintln(p.w, "phonebridge is relaying it now.")
	} else {
		fmt.Fprintln(p.w, "Start phonebridge (`phonebridge run`) to relay it.")
	}
}

// Failed turns the error of linking name into the one line to show. A
// *bridge.LinkError stays reachable with errors.As.
func Failed(name string, err error) error {
	var le *bridge.LinkError
	if !errors.As(err, &le) {
		return err
	}
	msg := linktext.CLI.Failure(name, le.Service, le)
	if le.Reason == bridge.LinkCancelled && le.Cause == "" {
		// Only the user's own interrupt cancels without saying why.
		msg = "cancelled with Ctrl-C"
	}
	return &failure{msg: "not linked: " + msg, err: le}
}

// UnlinkFailed turns the error of unlinking name into the one line to
// show.
func UnlinkFailed(name string, err error) error {
	var le *bridge.LinkError
	if !errors.As(err, &le) {
		return err
	}
	return &failure{msg: "not unlinked: " + linktext.CLI.UnlinkFailure(name, le.Service, le), err: le}
}

// failure is a LinkError worded for the command that got it.
type failure struct {
	msg string
	err *bridge.LinkError
}

func (f *failure) Error() string { return f.msg }
func (f *failure) Unwrap() error { return f.err }

// RenderQR draws code with half blocks (two modules a character), dark
// modules as blanks for dark terminals, or as blocks with light.
func RenderQR(code string, light bool) string {
	var b strings.Builder
	cfg := qrterminal.Config{
		Level:      qrterminal.L,
		Writer:     &b,
		HalfBlocks: true,
		QuietZone:  1,
	}
	if light {
		cfg.BlackChar = qrterminal.WHITE_WHITE
		cfg.WhiteChar = qrterminal.BLACK_BLACK
		cfg.BlackWhiteChar = qrterminal.WHITE_BLACK
		cfg.WhiteBlackChar = qrterminal.BLACK_WHITE
	} else {
		cfg.BlackChar = qrterminal.BLACK_BLACK
		cfg.WhiteChar = qrterminal.WHITE_WHITE
		cfg.BlackWhiteChar = qrterminal.BLACK_WHITE
		cfg.WhiteBlackChar = qrterminal.WHITE_BLACK
	}
	qrterminal.GenerateWithConfig(code, cfg)
	out := b.String()
	if light {
		// qrterminal draws the half line above the quiet zone as dark,
		// right on a dark terminal but a stray bar on a light one, where
		// the background beyond the code is light.
		first, rest, _ := strings.Cut(out, "\n")
		out = strings.Repeat(" ", utf8.RuneCountInString(first)) + "\n" + rest
	}
	return out
}

// formatPairingCode shows WhatsApp's 8-character code as the phone asks
// for it: ABCD-EFGH.
func formatPairingCode(code string) string {
	if len(code) == 8 && !strings.Contains(code, "-") {
		return code[:4] + "-" + code[4:]
	}
	return code
}
