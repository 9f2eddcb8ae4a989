/// How `since` and `rewind` starts find their positions, for every store: the store supplies its queries.
enum StorePositions {
    /// The largest id whose commit time is below `time` (0 when none): the position a start `since` that time
    /// reads after. Bisects ids on commit time, which writers never let go back; `firstAtOrAfter(id)` is the
    /// first retained event at or after `id` (one primary-key seek), whatever was deleted.
    static func lastID(
        before time: Int64, head: Int64, firstAtOrAfter: (Int64) throws -> (id: Int64, time: Int64)?
    ) rethrows -> Int64 {
        var low: Int64 = 0
        var high = head
        while low < high {
            let middle = low + (high - low + 1) / 2
            guard let (id, eventTime) = try firstAtOrAfter(middle), id <= high else {
                high = middle - 1
                continue
            }
            if eventTime < time { low = id } else { high = middle - 1 }
        }
        return low
    }

    /// The position before the `count`-th newest event matching `selectors` (0 when fewer match): a start that
    /// replays exactly the last `count`. One selector is one seek (`nthNewest(selector, n)`, the id of its n-th
    /// newest event, 1-based); several merge their newest ids (`newest(selector, count)`, descending).
    static func rewind(
        count: Int, selectors: SelectorSet,
        nthNewest: (Selector, Int) throws -> Int64?,
        newest: (Selector, Int) throws -> [Int64]
    ) rethrows -> Int64 {
        if selectors.selectors.count == 1 {
            return try nthNewest(selectors.selectors[0], count).map { $0 - 1 } ?? 0
        }
        var ids: [Int64] = []
        for selector in selectors.selectors { ids += try newest(selector, count) }
        guard ids.count >= count else { return 0 }
        ids.sort(by: >)
        return ids[count - 1] - 1
    }
}
