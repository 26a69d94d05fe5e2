package linkui

import (
	"bytes"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
)

// readmeLinkSection is README.md's "Link your phone" section: its console
// blocks' lines, and its prose (outside the blocks) with the line breaks
// of wrapped paragraphs read as spaces.
func readmeLinkSection(t *testing.T) (console []string, prose string) {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## Link your phone\n")
	if !ok {
		t.Fatal(`README.md has no "## Link your phone" section`)
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	var words []string
	fence := "" // the open block's language, "" outside one
	for _, line := range strings.Split(section, "\n") {
		switch {
		case strings.HasPrefix(line, "```") && fence == "":
			fence = cmpOr(strings.TrimPrefix(line, "```"), "text")
		case strings.HasPrefix(line, "```"):
			fence = ""
		case fence == "console":
			console = append(console, line)
		case fence == "":
			words = append(words, strings.Fields(line)...)
		}
	}
	return console, strings.Join(words, " ")
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// failureLine is the line `phonebridge link phone` ends with on stderr
// when linking fails with le, as main prints the error.
func failureLine(le *bridge.LinkError) string {
	return "phonebridge: " + Failed("phone", le).Error()
}

// TestREADMEQuotesWhatLinkPrints: every output the README's "Link your
// phone" quotes for `phonebridge link` is what the command prints: the
// steps, the countdowns, the success lines, and the one line of each
// failure, in its console blocks and in backticks in its prose. A
// rewording in linktext or linkui that the README does not follow (or the
// other way round) fails here.
func TestREADMEQuotesWhatLinkPrints(t *testing.T) {
	console, prose := readmeLinkSection(t)
	block := strings.Join(console, "\n") + "\n"

	// The failures each console line claims: each is the command's line
	// for a failure, and the ones a user meets first are all there.
	const svc = "WhatsApp"
	var printed []string // every failure line the command can end with
	for _, r := range bridge.LinkFailures {
		for _, cause := range []string{"", "…"} { // "…" stands for the platform's words
			printed = append(printed, failureLine(&bridge.LinkError{Reason: r, Service: svc, Cause: cause}))
		}
	}
	var quoted int
	for _, l := range console {
		if strings.HasPrefix(l, "phonebridge: not linked:") {
			quoted++
			if !slices.Contains(printed, l) {
				t.Errorf("the README shows the failure %q, which phonebridge link never prints", l)
			}
		}
	}
	for _, r := range []bridge.LinkFailure{bridge.LinkTimedOut, bridge.LinkNoMultidevice, bridge.LinkOutdated, bridge.LinkCancelled} {
		want := failureLine(&bridge.LinkError{Reason: r, Service: svc})
		if !slices.Contains(console, want) {
			t.Errorf("the README's failures do not show the %s line %q", r, want)
		}
	}
	if quoted == 0 {
		t.Error("the README's console blocks show no failure line")
	}

	// In the prose, backticked lines that start "not linked:", wrapped
	// as they may be, are failure lines without the program's prefix.
	var spans []string
	for _, m := range regexp.MustCompile("`(not linked:[^`]*)`").FindAllStringSubmatch(prose, -1) {
		spans = append(spans, m[1])
		if !slices.Contains(printed, "phonebridge: "+m[1]) {
			t.Errorf("the README quotes the failure %q, which phonebridge link never prints", m[1])
		}
	}
	for _, le := range []*bridge.LinkError{
		{Reason: bridge.LinkCodeExpired, Service: svc},
		{Reason: bridge.LinkNetworkDown, Service: svc, Cause: "…"},
	} {
		want := strings.TrimPrefix(failureLine(le), "phonebridge: ")
		if !slices.Contains(spans, want) {
			t.Errorf("the README's prose does not quote the %s line `%s` (it quotes %q)", le.Reason, want, spans)
		}
	}

	// The steps, then a code and its countdown, as a terminal shows them;
	// the countdown's seconds are the README's.
	for _, c := range []struct {
		what string
		pr   bridge.LinkProgress
		re   *regexp.Regexp
	}{
		{"QR code", bridge.LinkProgress{Kind: bridge.ProgressQR, QR: "2@README"}, regexp.MustCompile(`(?m)^Waiting for the phone… .*\b(\d+)s; .*$`)},
		{"pairing code", bridge.LinkProgress{Kind: bridge.ProgressPairingCode, PairingCode: "KJ7QW2ZP"}, regexp.MustCompile(`(?m)^Waiting for the phone… .*\b(\d+)s\.$`)},
	} {
		m := c.re.FindStringSubmatch(block)
		if m == nil {
			t.Errorf("the README shows no countdown under a %s like %s", c.what, c.re)
			continue
		}
		secs, _ := strconv.Atoi(m[1])
		p, buf, _ := newPrinter(true, false)
		c.pr.Expires = t0.Add(time.Duration(secs) * time.Second)
		p.Progress(c.pr)
		out := buf.String()
		steps, _, _ := strings.Cut(out, "\n\n")
		if c.pr.Kind == bridge.ProgressQR {
			steps = qrSteps
		}
		if !strings.Contains(block, steps) {
			t.Errorf("the README does not show the %s's steps as printed:\n%s", c.what, steps)
		}
		countdown := out[strings.LastIndex(strings.TrimSuffix(out, "\n"), "\n")+1:]
		if countdown != m[0]+"\n" {
			t.Errorf("the README shows the %s's countdown as %q, phonebridge link prints %q", c.what, m[0], strings.TrimSuffix(countdown, "\n"))
		}
		if c.pr.Kind == bridge.ProgressPairingCode && !strings.Contains(block, out[len(steps):len(out)-len(countdown)]) {
			t.Errorf("the README does not show the pairing code as printed: %q", out[len(steps):len(out)-len(countdown)])
		}
	}
	// Into a pipe, the countdown is printed once under each code.
	p, buf, _ := newPrinter(false, false)
	p.Progress(bridge.LinkProgress{Kind: bridge.ProgressQR, QR: "2@README", Expires: t0.Add(60 * time.Second)})
	plain := buf.String()
	plain = strings.TrimSuffix(plain[strings.LastIndex(strings.TrimSuffix(plain, "\n"), "\n")+1:], "\n")
	if !strings.Contains(prose, "`"+plain+"`") {
		t.Errorf("the README's prose does not quote the countdown printed into a pipe, `%s`", plain)
	}

	// Success, with and without the daemon.
	acct := bridge.LinkAccount{ID: "15551234567@s.whatsapp.net", Handle: "+15551234567", Device: "android"}
	var linked bytes.Buffer
	New(&linked, false, false).Linked("phone", acct, true)
	if !strings.Contains(block, linked.String()) {
		t.Errorf("the README does not show success as printed:\n%s", linked.String())
	}
	linked.Reset()
	New(&linked, false, false).Linked("phone", acct, false)
	_, second, _ := strings.Cut(strings.TrimSuffix(linked.String(), "\n"), "\n")
	if !strings.Contains(prose, `"`+strings.TrimSuffix(second, ".")) {
		t.Errorf("the README's prose does not quote the line without the daemon, %q", second)
	}
}
