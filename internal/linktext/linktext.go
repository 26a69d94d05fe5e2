// Package linktext words a link's state and linking's failures in
// English for whoever reads them: the CLI, the web page, the Matrix
// management room and the log. The core and the control protocol carry
// codes (bridge.LinkState, LinkReason, LinkFailure) and the platform's
// own words; the sentences live here, at the edge, so rewording one
// never breaks a client of another version.
package linktext

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
)

// Reader is who reads the words: it says how they run a command and how
// they stop linking.
type Reader struct {
	// Run writes a phonebridge command as the reader runs it.
	Run func(args ...string) string
	// Stop says how the reader stops linking.
	Stop string
}

// CLI reads in a shell: `phonebridge link wa`, Ctrl-C.
var CLI = Reader{
	Run:  func(args ...string) string { return "`phonebridge " + strings.Join(args, " ") + "`" },
	Stop: "press Ctrl-C to stop",
}

// Web reads on the link page, whose Cancel button stops linking; its
// commands are the CLI's.
var Web = Reader{Run: CLI.Run, Stop: "press Cancel to stop"}

// Room reads in the Matrix management room, where commands are sent as
// messages without the program's name.
var Room = Reader{
	Run:  func(args ...string) string { return "`" + strings.Join(args, " ") + "`" },
	Stop: "send `cancel` to stop",
}

// service is the platform's name for a sentence.
func service(name string) string { return cmp.Or(name, "the service") }

// State is the state's name as people read it: "phone unreachable".
func State(s bridge.LinkState) string { return strings.ReplaceAll(string(s), "_", " ") }

// Detail says why a link is in its state and what to do, in one line,
// or "" when the state says it all (connected). It leaves out Until,
// which each reader shows in its own time zone.
func (r Reader) Detail(st bridge.LinkStatus) string {
	svc := service(st.Service)
	var line string
	switch st.State {
	case bridge.LinkConnected:
		return ""
	case bridge.LinkConnecting:
		switch st.Reason {
		case bridge.ReasonConnectionLost:
			line = "the connection dropped; reconnecting"
		case bridge.ReasonNetworkDown:
			line = fmt.Sprintf("cannot reach %s's servers; retrying with backoff", svc)
		case bridge.ReasonRefused:
			line = fmt.Sprintf("%s refused the connection; trying again later", svc)
		case bridge.ReasonBanOver:
			line = "the temporary ban is over; reconnecting"
		}
	case bridge.LinkUnlinked:
		if st.Reason == bridge.ReasonUnlinked {
			line = "unlinked with " + r.Run("unlink")
		} else {
			line = "not linked: run " + r.Run("link", st.Name)
		}
	case bridge.LinkPhoneOffline:
		line = fmt.Sprintf("%s does not answer (phone or network unreachable); messages wait until it does", svc)
	case bridge.LinkLoggedOut:
		line = "removed from the phone's linked devices; run " + r.Run("link", st.Name)
	case bridge.LinkBanned:
		line = fmt.Sprintf("temporarily banned by %s; messages wait until the ban ends", svc)
	case bridge.LinkClientOutdated:
		line = fmt.Sprintf("%s refuses this phonebridge version; update phonebridge", svc)
	case bridge.LinkReplaced:
		line = "another client took over this session; restart phonebridge to take it back"
	case bridge.LinkStopped:
		if st.Reason == bridge.ReasonNotRunning {
			line = "linked; start phonebridge (" + r.Run("run") + ") to relay it"
		}
	}
	return withCause(line, st.Cause)
}

// Line is the operator's line about a link's state, for the log: what
// happened and what to do.
func (r Reader) Line(st bridge.LinkStatus) string {
	svc := service(st.Service)
	var line string
	switch st.State {
	case bridge.LinkConnected:
		line = svc + " connected; relaying"
	case bridge.LinkConnecting:
		line = "connecting to " + svc
		if d := r.Detail(st); d != "" {
			line = "not connected to " + svc + ": " + d
		}
	case bridge.LinkStopped:
		line = r.Detail(st)
	default:
		line = cmp.Or(r.Detail(st), State(st.State))
	}
	if !st.Until.IsZero() {
		line += " until " + st.Until.UTC().Format(time.RFC3339)
	}
	return line
}

// Failure says why linking the link called name failed, in one line.
func (r Reader) Failure(name, svcName string, le *bridge.LinkError) string {
	svc := service(svcName)
	var line string
	switch le.Reason {
	case bridge.LinkTimedOut:
		line = "timed out: no phone scanned the code; try again"
	case bridge.LinkCodeExpired:
		line = "the pairing code expired before the phone accepted it (typed wrong, or not at all); try again for a new code"
	case bridge.LinkNoMultidevice:
		line = fmt.Sprintf("the code was scanned by a %s without linked-device support; update %s on the phone", svc, svc)
	case bridge.LinkOutdated:
		line = fmt.Sprintf("%s refused this client as outdated; update phonebridge", svc)
	case bridge.LinkCancelled:
		line = "cancelled"
	case bridge.LinkShuttingDown:
		line = "cancelled: phonebridge is stopping"
	case bridge.LinkAlreadyLinked:
		line = "already linked"
		if le.Account != nil {
			line += " to " + le.Account.String()
		}
		line += "; run " + r.Run("unlink", name) + " first to link another account"
	case bridge.LinkNotLinked:
		line = name + " is not linked"
	case bridge.LinkBusy:
		line = "another process is driving this link"
	case bridge.LinkNetworkDown:
		line = fmt.Sprintf("cannot reach %s's servers; check the network", svc)
	case bridge.LinkLogoutFailed:
		line = "the logout did not go through"
	case bridge.LinkFailed:
		if le.Cause != "" {
			return oneLine(le.Cause)
		}
		line = "linking failed"
	default:
		// A code from a newer phonebridge: say it as it is.
		line = State(bridge.LinkState(le.Reason))
	}
	return withCause(line, le.Cause)
}

// UnlinkFailure says why unlinking the link called name failed, in one
// line, with what still can be done.
func (r Reader) UnlinkFailure(name, svcName string, le *bridge.LinkError) string {
	line := r.Failure(name, svcName, le)
	switch le.Reason {
	case bridge.LinkNetworkDown, bridge.LinkLogoutFailed:
		line += "; " + r.Run("unlink", name, "--local") + " forgets the keys here only (the phone keeps listing the device until you remove it there)"
	}
	return line
}

// Waiting says why linking waits, for a ProgressWaiting step.
func (r Reader) Waiting(svcName string, p bridge.LinkProgress) string {
	svc := service(svcName)
	var line string
	switch p.Reason {
	case bridge.ReasonNetworkDown:
		line = fmt.Sprintf("Cannot reach %s's servers", svc)
	default:
		line = "Waiting for " + svc
	}
	if p.Cause != "" {
		line += " (" + oneLine(p.Cause) + ")"
	}
	return line + "; retrying with backoff. Check the network, or " + r.Stop + "."
}

// withCause appends the platform's own words in parentheses.
func withCause(line, cause string) string {
	cause = oneLine(cause)
	switch {
	case cause == "":
		return line
	case line == "":
		return cause
	}
	if before, after, ok := strings.Cut(line, "; "); ok {
		return before + " (" + cause + "); " + after
	}
	return line + " (" + cause + ")"
}

// oneLine keeps words a single line, whatever a connector put in them:
// lines join with "; " unless one already ends in punctuation.
func oneLine(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		line = strings.Join(strings.Fields(line), " ")
		if line == "" {
			continue
		}
		if b.Len() > 0 {
			if strings.ContainsAny(b.String()[b.Len()-1:], ":;,.") {
				b.WriteString(" ")
			} else {
				b.WriteString("; ")
			}
		}
		b.WriteString(line)
	}
	return b.String()
}
