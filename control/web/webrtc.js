'use strict';

/*
 * What the broadcast page (app.js) and the room page (room-*.js, room.js) share; loaded
 * before them.
 *
 * The server is ICE-lite and takes no trickled candidates, so a description is sent once,
 * after local candidate gathering has finished (or a short timeout has passed).
 */

// Resolves when `pc` has gathered its candidates, or after `timeoutMs`.
function waitForIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', onState);
      pc.removeEventListener('icecandidate', onCandidate);
      resolve();
    };
    const onState = () => {
      if (pc.iceGatheringState === 'complete') finish();
    };
    // A null candidate also marks the end; some browsers signal it before the state event.
    const onCandidate = (ev) => {
      if (!ev.candidate) finish();
    };
    // The ICE-lite server learns our address from STUN checks (it never needs our
    // candidates), so a slow interface must not hold the description back for long.
    const timer = setTimeout(finish, timeoutMs);
    pc.addEventListener('icegatheringstatechange', onState);
    pc.addEventListener('icecandidate', onCandidate);
  });
}
