// Package control is the daemon's local control API, which the CLI
// (`phonebridge link`, `links`, `unlink`, `chats`) talks to.
//
// It is HTTP/1.1 with JSON bodies over a unix socket in the state_dir,
// created 0600: the socket's permissions are the access control, so it is
// never served on TCP. Errors are {"error": "one line", "code": "..."}.
//
// Every request but /v1/version carries the client's protocol version in
// the Phonebridge-Protocol header; the server refuses another version
// with 400 "protocol_mismatch", and the client checks the server's
// version at Dial, so a CLI and a daemon of different releases say so
// instead of misreading each other (docs/control.md).
//
//	GET  /v1/version                      {"version": "...", "protocol": N}
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

// Protocol is the control protocol's version. It changes when a message
// changes incompatibly; adding a field does not change it. Version 1 sent
// link failures and states as English sentences; 2 sends codes.
const Protocol = 2

// protocolHeader carries the client's Protocol on every request.
const protocolHeader = "Phonebridge-Protocol"

// Error codes.
const (
	codeProtocolMismatch = "protocol_mismatch"
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

// linkFailure is a bridge.LinkError on the wire: the code and what fills
// it in, never the words.
type linkFailure struct {
	Reason  bridge.LinkFailure  `json:"reason"`
	Service string              `json:"service,omitempty"`
	Cause   string              `json:"cause,omitempty"`
	Account *bridge.LinkAccount `json:"account,omitempty"`
}

func wireFailure(le *bridge.LinkError) *linkFailure {
	return &linkFailure{Reason: le.Reason, Service: le.Service, Cause: oneLine(le.Cause), Account: le.Account}
}

func (f *linkFailure) linkError() *bridge.LinkError {
	return &bridge.LinkError{Reason: f.Reason, Service: f.Service, Cause: f.Cause, Account: f.Account}
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
	Account  *bridge.LinkAccount  `json:"account,omitempty"` // linked
	Failure  *linkFailure         `json:"failure,omitempty"` // failed
}

type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
	// Problems lists a refused config's problems, one per line.
	Problems []string `json:"problems,omitempty"`
	// Failure is the link failure behind a code that names one.
	Failure *linkFailure `json:"failure,omitempty"`
}

// versionBody is what GET /v1/version answers.
type versionBody struct {
	Version string `json:"version"`
	// Protocol is 0 from a daemon older than versioning (protocol 1).
	Protocol int `json:"protocol"`
}

// oneLine keeps an error a single line, whatever a connector put in it.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
