//go:build go1.23

package botframework

import "iter"

// All ranges over the stream's deltas (Go 1.23 and later):
//
//	for d, err := range stream.All() {
//		if err != nil { ... }
//		fmt.Print(d.Content)
//	}
//
// An error ends the sequence as its last pair. Breaking out of the loop closes the stream.
func (s *Stream) All() iter.Seq2[Delta, error] {
	return func(yield func(Delta, error) bool) {
		for s.Next() {
			if !yield(s.Delta(), nil) {
				s.Close()
				return
			}
		}
		if err := s.Err(); err != nil {
			yield(Delta{}, err)
		}
	}
}
