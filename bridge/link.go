package bridge

import (
	"cmp"
	"context"
	"errors"
	"time"
)

// Linker is implemented by connectors that pair with an account the way a
// linked device does (WhatsApp): the control API and the CLI drive linking
// through it without knowing the platform.
type Linker interface {
	// LinkStatus reports the link's current state.
	LinkStatus() LinkStatus
	// Link pairs a new device, reporting progress (QR codes as they
	// rotate, a pairing code) to progress, and returns the linked account.
	// It fails with a *LinkError whose Reason says why.
	Link(ctx context.Context, opts LinkOptions, progress func(LinkProgress)) (LinkAccount, error)
	// Unlink logs the device out (it leaves the phone's list of linked
	// devices) and deletes its keys; localOnly forgets the keys without
	// telling the server.
	Unlink(ctx context.Context, localOnly bool) error
}

// LinkAdmin is the core's link management as a connector sees it: what
// the control socket offers the CLI, for connectors that let the owner
// manage links from their own platform.
type LinkAdmin interface {
	// Links reports every connector that links an account, by name.
	Links() []LinkStatus
	// Linker returns the named connector if it links an account.
	Linker(name string) (Linker, bool)
	// ChatLister returns the named connector if it lists its chats.
	ChatLister(name string) (ChatLister, bool)
}

// Backfiller is implemented by connectors that can ask their account
// for older messages of a chat (WhatsApp's on-demand history). Backfill
// returns once asked; what comes is relayed as history.
type Backfiller interface {
	Backfill(ctx context.Context, chat string, count int) error
}

// LinkConsole is implemented by connectors where the owner can manage
// links (the Matrix bridge bot's management room). The core hands them
// its LinkAdmin before Start.
type LinkConsole interface {
	SetLinkAdmin(LinkAdmin)
}

// ChatLister is implemented by connectors that can list the account's
// chats, so users can write routes.
type ChatLister interface {
	Chats(ctx context.Context, search string) ([]ChatInfo, error)
}

// ChatResolver is implemented by connectors whose routes may name a chat
// by its name instead of its id. The core resolves every endpoint at start.
type ChatResolver interface {
	// ResolveChat returns the id of the chat called nameOrID (an id is
	// returned as is), or an error saying it is unknown or ambiguous.
	ResolveChat(ctx context.Context, nameOrID string) (string, error)
}

// ChatIDChecker is implemented by connectors whose chat ids have a fixed
// form (a WhatsApp JID): a `chats: all` route sends such a connector only
// the chats it could have, so an API chat called "general" is not relayed
// to a WhatsApp chat that cannot exist.
type ChatIDChecker interface {
	IsChatID(id string) bool
}

// RouteWatcher is implemented by connectors that must act on the chats
// routes name on them (a Matrix bot joins its rooms). The core calls
// RoutedChats with every fixed chat id of the connector's endpoints, sorted,
// after each resolution of the routes: before Start, and again on reload
// or when chat names resolve later. It must not block.
type RouteWatcher interface {
	RoutedChats(chats []string)
}

// ChatMirror is implemented by connectors that make a room per chat of
// another platform (Matrix portals), so rooms can exist before a chat's
// first message. For each `chats: all` route that carries the chats of a
// ChatLister (the origin) to a ChatMirror, the core hands the mirror the
// origin's chats after each resolution of the routes: at start, on
// reload, and when the origin says its chats changed. It is called from
// its own goroutine, possibly before Start; it must not block long.
type ChatMirror interface {
	MirrorChats(origin string, chats []ChatInfo)
}

// ErrChatListUnavailable is what ResolveChat returns (wrapped) while the
// connector cannot know its chats yet (not linked, chat list not loaded):
// the core leaves the endpoint waiting and resolves it again on
// Sink.ChatsChanged, instead of failing.
var ErrChatListUnavailable = errors.New("the chat list is not available yet")

// ChatInfo is one chat of an account.
type ChatInfo struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Group bool   `json:"group"`
}

// LinkOptions say how to link.
type LinkOptions struct {
	// Phone, in international format, links by pairing code instead of
	// QR code.
	Phone string `json:"phone,omitempty"`
}

// LinkProgress is one step of linking.
type LinkProgress struct {
	Kind LinkProgressKind `json:"kind"`
	// QR is the code to render, for kind "qr".
	QR string `json:"qr,omitempty"`
	// PairingCode is the code to type on the phone, for kind "pairing_code".
	PairingCode string `json:"pairing_code,omitempty"`
	// Expires is when this code stops working.
	Expires time.Time `json:"expires,omitzero"`
	// Reason says why linking waits, for kind "waiting"; Cause is the
	// network's or the platform's own words for it.
	Reason LinkReason `json:"reason,omitempty"`
	Cause  string     `json:"cause,omitempty"`
}

// LinkProgressKind says what a LinkProgress carries.
type LinkProgressKind string

// Kinds of link progress.
const (
	ProgressQR          LinkProgressKind = "qr"
	ProgressPairingCode LinkProgressKind = "pairing_code"
	ProgressWaiting     LinkProgressKind = "waiting" // linking waits and retries; Reason says why
)

// LinkAccount is the account a link is to, in fields any platform can
// fill: the core and the CLI show them without knowing the platform.
type LinkAccount struct {
	ID     string `json:"id"`               // the account's id on the platform (a WhatsApp JID)
	Handle string `json:"handle,omitempty"` // how people reach it: a phone number in international format, a user name
	Name   string `json:"name,omitempty"`   // the name it shows others, once known
	Device string `json:"device,omitempty"` // the account's main device (android, iphone), where known
}

// String is the account as people know it: "+15551234567 (Alice)".
func (a LinkAccount) String() string {
	who := cmp.Or(a.Handle, a.ID)
	if a.Name != "" && who != "" {
		return who + " (" + a.Name + ")"
	}
	return cmp.Or(who, a.Name)
}

// LinkState is a link's state, as `phonebridge links` shows it.
type LinkState string

// Link states.
const (
	LinkUnlinked       LinkState = "unlinked"          // no device: run `phonebridge link`
	LinkConnecting     LinkState = "connecting"        // (re)connecting to the server
	LinkConnected      LinkState = "connected"         // relaying
	LinkPhoneOffline   LinkState = "phone_unreachable" // keep-alive lost: the server or phone does not answer
	LinkLoggedOut      LinkState = "logged_out"        // removed from the phone's linked devices
	LinkBanned         LinkState = "temporarily_banned"
	LinkClientOutdated LinkState = "client_outdated" // phonebridge must be updated
	LinkReplaced       LinkState = "replaced"        // another client took the session over
	LinkStopped        LinkState = "stopped"
)

// LinkReason says why a link is in its state, or why linking waits,
// where the state alone does not say it. The words for it are the
// reader's to choose (internal/linktext renders them in English), so a
// reason travels as this code and never as a sentence.
type LinkReason string

// Reasons for a link's state.
const (
	ReasonNone           LinkReason = ""
	ReasonConnectionLost LinkReason = "connection_lost" // connecting again after the connection dropped
	ReasonNetworkDown    LinkReason = "network_down"    // the platform's servers cannot be reached; Cause says how
	ReasonRefused        LinkReason = "refused"         // the server refused the connection; Cause has its code
	ReasonBanOver        LinkReason = "ban_over"        // connecting again after a temporary ban
	ReasonNotRunning     LinkReason = "not_running"     // linked by a CLI while no daemon runs
	ReasonUnlinked       LinkReason = "unlinked"        // unlinked with `unlink`
)

// LinkStatus is a link's state with its details.
type LinkStatus struct {
	Name    string    `json:"name"`    // the connector's name
	Service string    `json:"service"` // the platform's name, for sentences: "WhatsApp"
	State   LinkState `json:"state"`
	Since   time.Time `json:"since"`
	// Reason says why the link is in State, where there is more to say;
	// Cause is the platform's or network's own words (a ban code, a
	// logout reason, a dial error), shown as they are.
	Reason  LinkReason  `json:"reason,omitempty"`
	Cause   string      `json:"cause,omitempty"`
	Account LinkAccount `json:"account,omitzero"`
	// Until is when a temporary ban ends.
	Until time.Time `json:"until,omitzero"`
	// History is how far the link has relayed the history its account
	// handed it (nil: none).
	History *HistoryProgress `json:"history,omitempty"`
}

// HistoryProgress counts a link's history messages.
type HistoryProgress struct {
	Relayed int `json:"relayed"`
	Waiting int `json:"waiting"`
}

// LinkError says why linking or unlinking failed, as one of a few codes a
// user can act on. Error() is an English line for logs; what users read
// is rendered from the code (internal/linktext).
type LinkError struct {
	Reason LinkFailure
	// Service is the platform's name, for sentences: "WhatsApp".
	Service string
	// Cause is the platform's, library's or network's own words, shown
	// as they are.
	Cause string
	// Account is the account already linked, for LinkAlreadyLinked.
	Account *LinkAccount
}

func (e *LinkError) Error() string {
	msg := string(e.Reason)
	if e.Account != nil {
		msg += " to " + e.Account.String()
	}
	if e.Cause != "" {
		msg += ": " + e.Cause
	}
	return msg
}

// LinkFailure is why linking or unlinking failed: a code, as the control
// protocol carries it.
type LinkFailure string

// Reasons linking or unlinking fails.
const (
	LinkTimedOut      LinkFailure = "timed_out"      // no phone scanned the code in time
	LinkCodeExpired   LinkFailure = "code_expired"   // the pairing code expired before the phone took it
	LinkNoMultidevice LinkFailure = "no_multidevice" // scanned by an app without linked-device support
	LinkOutdated      LinkFailure = "outdated"       // the platform refused this client version
	LinkCancelled     LinkFailure = "cancelled"      // by the user
	LinkShuttingDown  LinkFailure = "shutting_down"  // cancelled because phonebridge is stopping
	LinkAlreadyLinked LinkFailure = "already_linked" // Account says to whom
	LinkNotLinked     LinkFailure = "not_linked"     // unlinking what is not linked
	LinkBusy          LinkFailure = "busy"           // another process drives this link
	LinkNetworkDown   LinkFailure = "network_down"   // the platform's servers cannot be reached
	LinkLogoutFailed  LinkFailure = "logout_failed"  // the server did not take the logout
	LinkFailed        LinkFailure = "link_failed"    // anything else; Cause says what
)

// LinkFailures are every LinkFailure, for those that check a code is known.
var LinkFailures = []LinkFailure{LinkTimedOut, LinkCodeExpired, LinkNoMultidevice, LinkOutdated,
	LinkCancelled, LinkShuttingDown, LinkAlreadyLinked, LinkNotLinked, LinkBusy, LinkNetworkDown,
	LinkLogoutFailed, LinkFailed}
