package proc

func signalIgnoreTerm() {}
