package bridge

import (
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
	Expires time.Time `json:"expires,omitempty"`
	// Message is a line for the user, for kind "info".
	Message string `json:"message,omitempty"`
}

// LinkProgressKind says what a LinkProgress carries.
type LinkProgressKind string

// Kinds of link progress.
const (
	ProgressQR          LinkProgressKind = "qr"
	ProgressPairingCode LinkProgressKind = "pairing_code"
	ProgressInfo        LinkProgressKind = "info"
)

// LinkAccount is the account a link is to.
type LinkAccount struct {
	ID       string `json:"id"`        // the account's id on the platform (a WhatsApp JID)
	Phone    string `json:"phone"`     // international format
	PushName string `json:"push_name"` // the name the account shows
	Platform string `json:"platform"`  // the phone's platform, where known
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

// LinkStatus is a link's state with its details.
type LinkStatus struct {
	Name    string      `json:"name"` // the connector's name
	State   LinkState   `json:"state"`
	Since   time.Time   `json:"since"`
	Detail  string      `json:"detail,omitempty"`
	Account LinkAccount `json:"account,omitempty"`
	// Until is when a temporary ban ends.
	Until time.Time `json:"until,omitempty"`
	// History is how far the link has relayed the history its account
	// handed it (nil: none).
	History *HistoryProgress `json:"history,omitempty"`
}

// HistoryProgress counts a link's history messages.
type HistoryProgress struct {
	Relayed int `json:"relayed"`
	Waiting int `json:"waiting"`
}

// LinkError says why linking failed, in one of a few reasons a user can
// act on.
type LinkError struct {
	Reason LinkFailure
	Detail string
}

func (e *LinkError) Error() string {
	if e.Detail != "" {
		return string(e.Reason) + ": " + e.Detail
	}
	return string(e.Reason)
}

// LinkFailure is why linking failed.
type LinkFailure string

// Reasons linking fails.
const (
	LinkTimedOut      LinkFailure = "timed out: no phone scanned the code; run the command again"
	LinkNoMultidevice LinkFailure = "the code was scanned by a WhatsApp without linked-device support; update WhatsApp on the phone"
	LinkOutdated      LinkFailure = "WhatsApp refused this client as outdated; update phonebridge"
	LinkCancelled     LinkFailure = "cancelled"
	LinkAlreadyLinked LinkFailure = "already linked; run `phonebridge unlink NAME` first to link another account"
	LinkBusy          LinkFailure = "another process is driving this link"
	LinkFailed        LinkFailure = "linking failed"
	LinkNetworkDown   LinkFailure = "cannot reach WhatsApp's servers; check the network"
)
