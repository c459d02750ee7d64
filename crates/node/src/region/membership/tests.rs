use super::*;

fn node(region: u16) -> Membership {
    let identity = NodeIdentity {
        region: RegionId(region),
        addr: SocketAddr::from(([10, 0, 0, region as u8], 7000)),
        generation: 1,
    };
    Membership::new(identity, &MembershipConfig::default(), u64::from(region))
}

/// Delivers every queued packet between `nodes` (addressed by address) until
/// quiet, ticking time forward by 10 ms per round.
fn run(nodes: &mut [Membership], now: &mut u64, until: u64, cut: &[(usize, usize)]) {
    while *now < until {
        for i in 0..nodes.len() {
            nodes[i].tick(Millis(*now));
            while let Some((to, bytes)) = nodes[i].poll_send() {
                if let Some(j) = nodes.iter().position(|n| n.identity().addr == to)
                    && !cut.contains(&(i, j))
                    && !cut.contains(&(j, i))
                {
                    nodes[j].handle_data(Millis(*now), &bytes);
                }
            }
        }
        *now += 10;
    }
}

fn up(node: &Membership) -> Vec<u16> {
    node.regions()
        .iter()
        .filter(|(_, v)| v.up)
        .map(|(r, _)| r.0)
        .collect()
}

#[test]
fn joins_through_one_seed_detects_a_death_and_rejoins_after_a_cut() {
    let mut nodes: Vec<Membership> = (1..=3).map(node).collect();
    let mut now = 0;
    let seed = nodes[0].identity().addr;
    nodes[1].join(Millis(now), &[seed]);
    nodes[2].join(Millis(now), &[seed]);
    run(&mut nodes, &mut now, 2_000, &[]);
    assert_eq!(up(&nodes[0]), vec![2, 3]);
    assert_eq!(up(&nodes[2]), vec![1, 2], "learned region 2 by gossip");

    // Cut node 3 off: the others declare it down.
    let cut = [(0, 2), (1, 2)];
    run(&mut nodes, &mut now, 12_000, &cut);
    assert_eq!(up(&nodes[0]), vec![2]);
    assert_eq!(up(&nodes[2]), Vec::<u16>::new());

    // Heal: everyone is up again, by renewal and announces to down members.
    run(&mut nodes, &mut now, 16_000, &[]);
    for n in &nodes {
        assert_eq!(up(n).len(), 2, "{:?}", n.regions());
    }
}

#[test]
fn two_groups_that_formed_apart_merge_once_the_cut_heals() {
    // Four regions, every one given every other as a seed, but {1, 2} and
    // {3, 4} cannot reach each other while they join: each pair forms a
    // cluster that has never heard of the other (the simulator's soak found
    // this as a split brain that never healed).
    let mut nodes: Vec<Membership> = (1..=4).map(node).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.identity().addr).collect();
    let mut now = 0;
    for (i, n) in nodes.iter_mut().enumerate() {
        let seeds: Vec<SocketAddr> = addrs
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, a)| *a)
            .collect();
        n.join(Millis(now), &seeds);
    }
    let cut = [(0, 2), (0, 3), (1, 2), (1, 3)];
    run(&mut nodes, &mut now, 5_000, &cut);
    assert_eq!(up(&nodes[0]), vec![2]);
    assert_eq!(up(&nodes[2]), vec![4]);
    assert!(
        !nodes[0].regions().contains_key(&RegionId(3)),
        "never heard of 3"
    );

    // Heal: within a few seconds everyone sees everyone.
    run(&mut nodes, &mut now, 9_000, &[]);
    for n in &nodes {
        assert_eq!(up(n).len(), 3, "{:?}", n.regions());
    }
}

#[test]
fn graceful_leave_is_seen_as_down() {
    let mut nodes: Vec<Membership> = (1..=2).map(node).collect();
    let mut now = 0;
    let seed = nodes[0].identity().addr;
    nodes[1].join(Millis(now), &[seed]);
    run(&mut nodes, &mut now, 1_000, &[]);
    assert_eq!(up(&nodes[0]), vec![2]);
    nodes[1].leave(Millis(now));
    run(&mut nodes, &mut now, 1_500, &[]);
    assert_eq!(up(&nodes[0]), Vec::<u16>::new());
}

#[test]
fn hostile_bytes_are_dropped() {
    let mut n = node(1);
    for len in [0usize, 1, 7, 64, 2_000] {
        let junk: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
        n.handle_data(Millis(0), &junk);
    }
    assert!(n.regions().is_empty());
}
