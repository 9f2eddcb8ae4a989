extension EventLogError {
    /// A store failure as the log reports it: nothing was written.
    static func storage(_ error: SQLiteError) -> EventLogError {
        EventLogError(.storageUnavailable, "the store cannot write: \(error.message)")
    }
}
