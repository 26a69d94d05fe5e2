// Package control is the daemon's local control API, which the CLI
// (`phonebridge link`, `links`, `unlink`, `chats`) talks to.
//
// It is HTTP/1.1 with JSON bodies over a unix socket in the state_dir,
// created 0600: the socket's permissions are the access control, so it is
// never served on TCP. Errors are {"error": "one line", "code": "..."}.
//
//	GET  /v1/version                      {"version": "..."}
//	GET  /v1/status                       StatusReport
//	POST /v1/reload                       ReloadReport, or 422 with the problems
//	GET  /v1/links                        {"links": [LinkStatus...]}
//	GET  /v1/links/{name}/chats?search=   {"chats": [ChatInfo...]}
//	POST /v1/links/{name}/unlink?local=   {"unlinked": "name"}
//	GET  /v1/links/{name}/link?phone=     websocket: progress frames, then
//	                                      linked or failed, then a close
package control

import (
	"strings"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
)

// Error codes.
const (
	codeBadRequest       = "bad_request"
	codeNotFound         = "not_found"
	codeMethodNotAllowed = "method_not_allowed"
	codeUnavailable      = "unavailable"
	codeInternal         = "internal"
	codeBadConfig        = "bad_config"
)

// StatusReport is what GET /v1/status answers: `phonebridge status`.
type StatusReport struct {
	Version    string                   `json:"version"`
	Started    time.Time                `json:"started"`
	Config     string                   `json:"config"`
	Connectors []bridge.ConnectorReport `json:"connectors"`
	Links      []bridge.LinkStatus      `json:"links"`
	// Outbox lists the chats with deliveries waiting, oldest first;
	// Failed counts deliveries skipped for good.
	Outbox []bridge.QueueStatus `json:"outbox"`
	Failed int                  `json:"failed"`
}

// ReloadReport is what POST /v1/reload answers.
type ReloadReport struct {
	Config    string   `json:"config"`
	Added     []string `json:"added"`
	Restarted []string `json:"restarted"`
	Removed   []string `json:"removed"`
	// Ignored are settings that changed but apply at the next start.
	Ignored []string `json:"ignored"`
	// Error is what went wrong applying it, if anything (a connector that
	// did not start); the rest stands.
	Error string `json:"error,omitempty"`
}

// failureCodes are the codes of errors that carry a bridge.LinkError, so
// the client can give the caller back the same Reason.
var failureCodes = map[bridge.LinkFailure]string{
	bridge.LinkTimedOut:      "timed_out",
	bridge.LinkNoMultidevice: "no_multidevice",
	bridge.LinkOutdated:      "outdated",
	bridge.LinkCancelled:     "cancelled",
	bridge.LinkAlreadyLinked: "already_linked",
	bridge.LinkBusy:          "busy",
	bridge.LinkFailed:        "link_failed",
	bridge.LinkNetworkDown:   "network_down",
}

// Link stream frame types.
const (
	frameProgress = "progress"
	frameLinked   = "linked"
	frameFailed   = "failed"
	frameCancel   = "cancel" // client to server
)

// frame is one websocket message of a link stream.
type frame struct {
	Type     string               `json:"type"`
	Progress *bridge.LinkProgress `json:"progress,omitempty"`
	Account  *bridge.LinkAccount  `json:"account,omitempty"`
	Reason   string               `json:"reason,omitempty"`
	Detail   string               `json:"detail,omitempty"`
}

type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
	// Problems lists a refused config's problems, one per line.
	Problems []string `json:"problems,omitempty"`
}

// oneLine keeps an error a single line, whatever a connector put in it.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
