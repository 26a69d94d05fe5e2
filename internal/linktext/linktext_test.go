package linktext

import (
	"strings"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
)

// Every failure code has its own words for every reader: none falls
// through to the code itself, two codes never read the same, and each
// reader's commands are its own.
func TestEveryFailureHasWords(t *testing.T) {
	seen := map[string]bridge.LinkFailure{}
	for _, r := range bridge.LinkFailures {
		le := &bridge.LinkError{Reason: r, Service: "WhatsApp"}
		if r == bridge.LinkAlreadyLinked {
			le.Account = &bridge.LinkAccount{ID: "1@s.whatsapp.net", Handle: "+1555", Name: "Ann"}
		}
		line := CLI.Failure("wa", le.Service, le)
		if line == "" || strings.Contains(line, "_") {
			t.Errorf("%s reads %q", r, line)
		}
		if other, ok := seen[line]; ok {
			t.Errorf("%s and %s both read %q", r, other, line)
		}
		seen[line] = r
	}
	le := &bridge.LinkError{Reason: bridge.LinkAlreadyLinked, Service: "WhatsApp", Account: &bridge.LinkAccount{Handle: "+1555", Name: "Ann"}}
	if got, want := CLI.Failure("wa", "WhatsApp", le), "already linked to +1555 (Ann); run `phonebridge unlink wa` first to link another account"; got != want {
		t.Errorf("CLI: %q, want %q", got, want)
	}
	if got, want := Room.Failure("wa", "WhatsApp", le), "already linked to +1555 (Ann); run `unlink wa` first to link another account"; got != want {
		t.Errorf("room: %q, want %q", got, want)
	}
	// A code from a newer release still reads as words.
	if got := CLI.Failure("wa", "", &bridge.LinkError{Reason: "rate_limited", Cause: "429"}); got != "rate limited (429)" {
		t.Errorf("an unknown code reads %q", got)
	}
}

func TestCausesAndAdvice(t *testing.T) {
	le := &bridge.LinkError{Reason: bridge.LinkNetworkDown, Service: "WhatsApp", Cause: "dial tcp: i/o timeout\nretry"}
	want := "cannot reach WhatsApp's servers (dial tcp: i/o timeout; retry); check the network; `phonebridge unlink wa --local` forgets the keys here only (the phone keeps listing the device until you remove it there)"
	if got := CLI.UnlinkFailure("wa", le.Service, le); got != want {
		t.Errorf("unlink failure:\n got %q\nwant %q", got, want)
	}
	p := bridge.LinkProgress{Kind: bridge.ProgressWaiting, Reason: bridge.ReasonNetworkDown, Cause: "no route to host"}
	if got, want := Room.Waiting("WhatsApp", p), "Cannot reach WhatsApp's servers (no route to host); retrying with backoff. Check the network, or send `cancel` to stop."; got != want {
		t.Errorf("room waiting: %q, want %q", got, want)
	}
	if got := CLI.Waiting("WhatsApp", p); !strings.HasSuffix(got, "press Ctrl-C to stop.") {
		t.Errorf("CLI waiting: %q", got)
	}
}

func TestStates(t *testing.T) {
	until := time.Date(2026, 12, 7, 13, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		st           bridge.LinkStatus
		detail, line string
	}{
		{bridge.LinkStatus{Name: "wa", Service: "WhatsApp", State: bridge.LinkConnected}, "", "WhatsApp connected; relaying"},
		{bridge.LinkStatus{Name: "wa", Service: "WhatsApp", State: bridge.LinkConnecting}, "", "connecting to WhatsApp"},
		{bridge.LinkStatus{Name: "wa", Service: "WhatsApp", State: bridge.LinkConnecting, Reason: bridge.ReasonRefused, Cause: "418 teapot"},
			"WhatsApp refused the connection (418 teapot); trying again later", "not connected to WhatsApp: WhatsApp refused the connection (418 teapot); trying again later"},
		{bridge.LinkStatus{Name: "wa", Service: "WhatsApp", State: bridge.LinkUnlinked}, "not linked: run `phonebridge link wa`", "not linked: run `phonebridge link wa`"},
		{bridge.LinkStatus{Name: "wa", Service: "WhatsApp", State: bridge.LinkUnlinked, Reason: bridge.ReasonUnlinked}, "unlinked with `phonebridge unlink`", "unlinked with `phonebridge unlink`"},
		{bridge.LinkStatus{Name: "wa", Service: "WhatsApp", State: bridge.LinkLoggedOut, Cause: "device removed"},
			"removed from the phone's linked devices (device removed); run `phonebridge link wa`", "removed from the phone's linked devices (device removed); run `phonebridge link wa`"},
		{bridge.LinkStatus{Name: "wa", Service: "WhatsApp", State: bridge.LinkBanned, Cause: "101", Until: until},
			"temporarily banned by WhatsApp (101); messages wait until the ban ends", "temporarily banned by WhatsApp (101); messages wait until the ban ends until 2026-12-07T13:00:00Z"},
		{bridge.LinkStatus{Name: "wa", Service: "WhatsApp", State: bridge.LinkStopped, Reason: bridge.ReasonNotRunning}, "linked; start phonebridge (`phonebridge run`) to relay it", "linked; start phonebridge (`phonebridge run`) to relay it"},
		{bridge.LinkStatus{Name: "wa", Service: "WhatsApp", State: "rate_limited"}, "", "rate limited"},
	} {
		if got := CLI.Detail(c.st); got != c.detail {
			t.Errorf("%s/%s detail %q, want %q", c.st.State, c.st.Reason, got, c.detail)
		}
		if got := CLI.Line(c.st); got != c.line {
			t.Errorf("%s/%s line %q, want %q", c.st.State, c.st.Reason, got, c.line)
		}
	}
}
