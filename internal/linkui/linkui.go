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

	"github.com/mdp/qrterminal/v3"

	"github.com/phonebridge/phonebridge/bridge"
)

// Printer prints one linking session.
type Printer struct {
	w     io.Writer
	tty   bool // redraw in place with ANSI escapes
	light bool // dark modules on a light background
	now   func() time.Time

	mu       sync.Mutex
	intro    bool
	drawn    int // lines of the last code block, to redraw over
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
		p.expires = pr.Expires
		p.redraw(block + p.countdown() + "\n")
	case bridge.ProgressPairingCode:
		if !p.intro {
			fmt.Fprint(p.w, codeSteps)
			p.intro = true
		}
		p.expires = pr.Expires
		p.redraw("\n      " + formatPairingCode(pr.PairingCode) + "\n\n" + p.countdown() + "\n")
	case bridge.ProgressInfo:
		fmt.Fprintln(p.w, pr.Message)
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
	if p.tty {
		return fmt.Sprintf("Waiting for the phone… this code is valid for %ds; a new one replaces it.", p.lastLeft)
	}
	return fmt.Sprintf("(valid for %ds; a new code follows if it expires)", p.lastLeft)
}

// redraw replaces the last block on a terminal; elsewhere it appends.
func (p *Printer) redraw(block string) {
	if p.tty && p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA\x1b[J", p.drawn)
	}
	fmt.Fprint(p.w, block)
	p.drawn = strings.Count(block, "\n")
}

// Linked reports success. running says the daemon relays the link now.
func (p *Printer) Linked(name string, acct bridge.LinkAccount, running bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA\x1b[J", p.drawn)
	}
	p.drawn = 0
	who := acct.Phone
	if acct.PushName != "" {
		who += " (" + acct.PushName + ")"
	}
	if acct.Platform != "" {
		who += " on " + acct.Platform
	}
	fmt.Fprintf(p.w, "Linked %s to %s.\n", name, who)
	if running {
		fmt.Fprintln(p.w, "phonebridge is relaying it now.")
	} else {
		fmt.Fprintln(p.w, "Start phonebridge (`phonebridge run`) to relay it.")
	}
}

// Failed turns a linking error into the one line to show.
func Failed(err error) error {
	var le *bridge.LinkError
	if errors.As(err, &le) {
		return errors.New("not linked: " + le.Error())
	}
	return err
}

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
	return b.String()
}

// formatPairingCode shows WhatsApp's 8-character code as the phone asks
// for it: ABCD-EFGH.
func formatPairingCode(code string) string {
	if len(code) == 8 && !strings.Contains(code, "-") {
		return code[:4] + "-" + code[4:]
	}
	return code
}
