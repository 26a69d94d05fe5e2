package whatsapp

import (
	"context"
	"sync"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
)

// lockedContacts serialises calls to whatsmeow's contact store. Its
// sqlstore GetContact copies a cached entry after releasing its own lock
// while PutPushName may be changing that entry (a data race the race
// detector reports when a name arrives as the connector looks one up).
type lockedContacts struct {
	mu    sync.Mutex
	inner store.ContactStore
}

// guardContacts wraps dev's contact store once it is initialised (a
// device is given its stores when it is paired or loaded).
func guardContacts(dev *store.Device) {
	if dev == nil || dev.Contacts == nil {
		return
	}
	if _, ok := dev.Contacts.(*lockedContacts); ok {
		return
	}
	dev.Contacts = &lockedContacts{inner: dev.Contacts}
}

func (l *lockedContacts) PutPushName(ctx context.Context, user types.JID, pushName string) (bool, string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inner.PutPushName(ctx, user, pushName)
}

func (l *lockedContacts) PutBusinessName(ctx context.Context, user types.JID, name string) (bool, string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inner.PutBusinessName(ctx, user, name)
}

func (l *lockedContacts) PutContactName(ctx context.Context, user types.JID, fullName, firstName string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inner.PutContactName(ctx, user, fullName, firstName)
}

func (l *lockedContacts) PutAllContactNames(ctx context.Context, contacts []store.ContactEntry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inner.PutAllContactNames(ctx, contacts)
}

func (l *lockedContacts) PutManyRedactedPhones(ctx context.Context, entries []store.RedactedPhoneEntry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inner.PutManyRedactedPhones(ctx, entries)
}

func (l *lockedContacts) GetContact(ctx context.Context, user types.JID) (types.ContactInfo, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inner.GetContact(ctx, user)
}

func (l *lockedContacts) GetAllContacts(ctx context.Context) (map[types.JID]types.ContactInfo, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inner.GetAllContacts(ctx)
}
