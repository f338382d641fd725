package main

func (b *bench) stream()   {}
func (b *bench) fanout()   {}
func (b *bench) reads()    {}
func (b *bench) rotation() {}
